-- Erasure of one entity's personal data (docs/security.md, "Erasure").
--
-- Streams are append-only: nobody may change or remove a record, and the
-- refuse-change triggers hold even the owner to it. Erasing a person's data
-- is the one exception, and it has exactly one door: entity.erase_entity, a
-- security-definer function owned by tidings_owner that only the operator
-- may execute. Inside it, and only there, the guard lets rows be rewritten
-- in place (never removed): names, email addresses, Slack destinations,
-- subjects and bodies become placeholders, while every record keeps its id,
-- type, position, times, writer, statuses and counts. The same transaction
-- appends the erasure itself (who, when, why, what) to a stream of its own,
-- entity.erasures, and marks the erased notifications so that no re-drive
-- or resend brings them back.
--
-- Why rewriting rather than crypto-shredding: see docs/security.md.

-- ===========================================================================
-- The engine's part: an erasure window the append-only guard recognises.
-- ===========================================================================

-- A permit names the one transaction that is erasing. Only the owner can
-- write it (no grant to anyone), and entity.erase_entity inserts it when it
-- starts and deletes it before it returns, so no other transaction ever sees
-- it and no statement after the function's own can use it. The setting
-- tidings.erasure is only the cheap first test on the guard's hot path: anyone
-- can set it, and alone it allows nothing.
create table tidings.erasure_permits (
  tx_id xid8 primary key,
  granted_at timestamptz not null default now()
);
comment on table tidings.erasure_permits is
  'The transaction erasing an entity''s data (entity.erase_entity), while it runs: the append-only guard lets it rewrite rows. Written and read by the owner only.';
revoke all on tidings.erasure_permits from public;

-- Whether this transaction is inside an erasure. Security definer: the guard
-- runs as whoever changes a row, who may not read the permits.
create or replace function tidings.erasing() returns boolean
language sql volatile security definer set search_path = pg_catalog, pg_temp as $$
  select current_setting('tidings.erasure', true) = 'on'
     and exists (select 1 from tidings.erasure_permits p where p.tx_id = pg_current_xact_id_if_assigned())
$$;
comment on function tidings.erasing() is
  'True inside entity.erase_entity only: the setting tidings.erasure alone is not enough, the transaction must hold a permit only the owner can write.';

create function tidings.begin_erasure() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  insert into tidings.erasure_permits (tx_id) values (pg_current_xact_id());
  perform set_config('tidings.erasure', 'on', true);
end;
$$;

create function tidings.end_erasure() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  delete from tidings.erasure_permits where tx_id = pg_current_xact_id();
  perform set_config('tidings.erasure', '', true);
end;
$$;
revoke execute on function tidings.begin_erasure(), tidings.end_erasure() from public;

-- Records whose id was erased: every record of a notification to an erased
-- entity. The handling guard refuses to make such a record available again
-- (a re-drive), and a resend of it is refused: its content is gone, and
-- sending it again would send placeholders. Append-only.
create table tidings.erased_records (
  id text primary key,
  erasure_stream text not null,
  erasure_position bigint not null,
  erased_at timestamptz not null default now()
);
comment on table tidings.erased_records is
  'Record ids (notifications'' tracking ids) whose personal data was erased, and the erasure record that did it. Such records are never re-driven or resent.';
revoke all on tidings.erased_records from public;
create trigger refuse_update_delete before update or delete on tidings.erased_records
  for each statement execute function tidings.tg_refuse_change();
create trigger refuse_truncate before truncate on tidings.erased_records
  for each statement execute function tidings.tg_refuse_change();

-- Why a record may not come back, or null. Security definer: the operator
-- re-driving does not read the erasure tables.
create or replace function tidings.erased_record_note(p_stream text, p_position bigint) returns text
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  note text;
begin
  execute format($q$
    select format('record %%s of %%s belongs to notification %%s, whose personal data was erased at %%s (%%s position %%s): it cannot be re-driven or resent',
                  r.position, %L, e.id, e.erased_at, e.erasure_stream, e.erasure_position)
    from %s r join tidings.erased_records e on e.id = r.id
    where r.position = $1$q$, p_stream, tidings.stream_table(p_stream))
    into note using p_position;
  return note;
end;
$$;

-- The guards of 0001_engine.sql (tg_refuse_change, tg_guard_handling,
-- tg_record_handling_history) ask the two hooks above, tidings.erasing() and
-- tidings.erased_record_note(), which 0001 declares as stubs (never erasing,
-- nothing erased) and this migration defines.

-- ===========================================================================
-- The entity's part: the erasure stream, the redaction, the one door.
-- ===========================================================================

select tidings.declare_stream('entity.erasures', 'entity', 'event', null,
  array['EntityErasedEvent'],
  'Erasures of an entity''s personal data (id = entity id): who, when, why, which notifications and how many rows in each place. Written only by entity.erase_entity.');
-- Nobody is its producer: only entity.erase_entity (as the owner) appends to it.
select tidings.declare_reader('entity.erasures', 'reader');
select tidings.refresh_audit_views();

-- A resend of an erased notification is refused where it is asked for.
create function entity.tg_refuse_erased_resend() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  erased record;
begin
  select e.* into erased from tidings.erased_records e where e.id = new.id;
  if found then
    raise exception 'notification % cannot be resent: its personal data was erased at % (% position %)',
      new.id, erased.erased_at, erased.erasure_stream, erased.erasure_position
      using errcode = 'TD007';
  end if;
  return new;
end;
$$;
create trigger refuse_erased_resend before insert on notification.internal_operations
  for each row when (new.type = 'ResendNotificationOp') execute function entity.tg_refuse_erased_resend();

-- The placeholders keep each record readable by its schema (a valid email
-- address, a valid Slack destination, a non-empty text), so views, the API
-- and the audit still read erased records.
create function entity.erased_placeholder(p_kind text) returns jsonb
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select case p_kind when 'email' then '"erased@erased.invalid"' when 'slack' then '"#erased"' else '"[erased]"' end::jsonb
$$;

-- Free text (an SMTP error, a reason, an alert's body) with every personal
-- value in it replaced, case-insensitively. Values shorter than three
-- characters are left in free text (they would match everywhere); the
-- fields that hold them are erased whole all the same.
create function entity.scrub(p_text text, p_personal text[]) returns text
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
declare
  v text;
  t text := p_text;
  at integer;
  from_char integer;
begin
  if t is null then
    return null;
  end if;
  -- Longest first: an address goes whole before a name inside it.
  foreach v in array array(select x from unnest(p_personal) x where length(x) >= 3 order by length(x) desc, x) loop
    from_char := 1;
    loop
      at := strpos(lower(substr(t, from_char)), lower(v));
      exit when at = 0;
      at := at + from_char - 1;
      t := overlay(t placing '[erased]' from at for length(v));
      from_char := at + length('[erased]');
    end loop;
  end loop;
  return t;
end;
$$;

-- A payload with the entity's personal data erased. By key, wherever it is
-- nested (an operation inside a saga's fallback step, a channel inside a
-- view): contents and names become "[erased]", addresses and Slack
-- destinations become placeholders of their kind, keeping arrays' lengths.
-- Every other string has the personal values scrubbed out, except those
-- under keys that hold ids, types, states and times (which cannot hold
-- them, and which joins and schemas rely on).
create function entity.redact(p_doc jsonb, p_personal text[], p_key text default null) returns jsonb
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
declare
  result jsonb;
begin
  if p_doc is null or jsonb_typeof(p_doc) = 'null' then
    return p_doc;
  end if;
  if p_key in ('subject', 'text', 'html', 'markdown', 'mrkdwn', 'name', 'entityName') and jsonb_typeof(p_doc) = 'string' then
    return entity.erased_placeholder('text');
  end if;
  if p_key = 'email' and jsonb_typeof(p_doc) = 'string' then
    return entity.erased_placeholder('email');
  end if;
  if p_key = 'slack' and jsonb_typeof(p_doc) = 'string' then
    return entity.erased_placeholder('slack');
  end if;
  if p_key in ('to', 'accepted', 'rejected') and jsonb_typeof(p_doc) = 'array' then
    return (select coalesce(jsonb_agg(entity.erased_placeholder('email')), '[]') from jsonb_array_elements(p_doc));
  end if;
  if p_key in ('destination', 'previousDestination') and jsonb_typeof(p_doc) = 'string' then
    return entity.erased_placeholder(case when p_doc #>> '{}' like '%@%' then 'email' else 'slack' end);
  end if;
  -- "channel" is a channel's name (email, slack) or, in Slack's records, the destination.
  if p_key = 'channel' and jsonb_typeof(p_doc) = 'string' and p_doc #>> '{}' not in ('email', 'slack') then
    return entity.erased_placeholder('slack');
  end if;
  case jsonb_typeof(p_doc)
    when 'object' then
      select coalesce(jsonb_object_agg(e.key, entity.redact(e.value, p_personal, e.key)), '{}') into result from jsonb_each(p_doc) e;
      return result;
    when 'array' then
      select coalesce(jsonb_agg(entity.redact(e.value, p_personal, p_key) order by e.ord), '[]') into result
      from jsonb_array_elements(p_doc) with ordinality e(value, ord);
      return result;
    when 'string' then
      if p_key in ('id', 'type', 'entityId', 'notificationId', 'operationId', 'previousOperationId', 'messageId', 'stream',
                   'status', 'outcome', 'purpose', 'policy', 'delivery', 'kind', 'failureEventType', 'classification',
                   'sent', 'failed', 'channels', 'optedOut', 'deliveredBy', 'changed', 'waitingFor',
                   'onAllSent', 'onSomeSent', 'onNoneSent', 'deadline', 'at', 'requestedAt', 'updatedAt', 'ts') then
        return p_doc;
      end if;
      return to_jsonb(entity.scrub(p_doc #>> '{}', p_personal));
    else
      return p_doc;
  end case;
end;
$$;

-- The values to scrub from a row of record id p_id: the entity's own, and
-- its notification's content when the row is about one.
create function entity.values_for(p_common text[], p_own jsonb, p_id text) returns text[]
language sql immutable set search_path = pg_catalog, pg_temp as $$
  select p_common || coalesce(array(select jsonb_array_elements_text(p_own->p_id)), '{}')
$$;

revoke execute on function entity.redact(jsonb, text[], text), entity.scrub(text, text[]), entity.erased_placeholder(text),
  entity.values_for(text[], jsonb, text) from public;

-- Erase one entity's personal data, or (p_execute false) count what would
-- change. Returns a JSON report: the notifications concerned, per place
-- (a stream, its handling, its handling history, idempotency keys, jobs,
-- projection failures) the rows rewritten, what still waits to be handled
-- (an erasure is refused while anything but a saga's deadline waits: the
-- bots would send placeholders), and the erasure record appended.
create function entity.erase_entity(p_entity_id text, p_erased_by text, p_reason text, p_execute boolean default false)
returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  ids text[];
  personal text[];
  own jsonb;
  places jsonb := '[]';
  waiting jsonb := '[]';
  declared record;
  consumer record;
  n bigint;
  rows_of text;
  erasure record;
  counts jsonb := '{}';
  settled constant text[] := array['Completed', 'Failed', 'ArchivedAfterFailure', 'DisabledForRecord'];
begin
  if p_entity_id is null or length(p_entity_id) > 200 or p_entity_id !~ '^[A-Za-z0-9][A-Za-z0-9._:@-]*$' then
    raise exception 'entity: must be 1-200 characters, start with a letter or digit and contain only letters, digits and . _ : @ -' using errcode = '22023';
  end if;
  if p_execute and (coalesce(btrim(p_erased_by), '') = '' or length(p_erased_by) > 200) then
    raise exception 'erased_by: who erases must be named (1-200 characters)' using errcode = '22023';
  end if;
  if p_execute and (coalesce(btrim(p_reason), '') = '' or length(p_reason) > 2000) then
    raise exception 'reason: an erasure needs a reason (1-2000 characters)' using errcode = '22023';
  end if;
  if not exists (select 1 from entity.events e where e.id = p_entity_id) then
    raise exception 'unknown entity "%": nothing was ever recorded for it', p_entity_id using errcode = 'TD006';
  end if;

  -- The entity's notifications: every record about one has its tracking id
  -- as its id, in every stream (its alerts and resends too).
  select coalesce(array_agg(distinct c.id order by c.id), '{}') into ids
  from notification.client_operations c where c.payload->>'entityId' = p_entity_id;

  -- The personal values, to scrub out of free text (errors, reasons, alert
  -- bodies): the entity's own, for every row, and each notification's
  -- content, for that notification's rows only (scrubbing every row with
  -- every notification's text would cost rows x notifications).
  select coalesce(jsonb_object_agg(c.id, to_jsonb(array_remove(array[c.payload->>'subject', c.payload->>'text', c.payload->>'html', c.payload->>'markdown'], null))), '{}')
  into own from notification.client_operations c where c.id = any (ids);
  select coalesce(array_agg(distinct v), '{}') into personal from (
    select e.payload->'entity'->>'name' as v from entity.events e where e.id = p_entity_id
    union all select e.payload->'entity'->>'email' from entity.events e where e.id = p_entity_id
    union all select e.payload->'entity'->>'slack' from entity.events e where e.id = p_entity_id
    union all select jsonb_array_elements_text(o.payload->'to') from email.operations o
      where o.id = any (ids) and o.payload->>'purpose' = 'notification'
    union all select o.payload->>'channel' from slack.operations o where o.id = any (ids) and o.payload->>'purpose' = 'notification'
    union all select ev.payload->>'channel' from slack.events ev where ev.id = any (ids) and ev.type = 'SucceededInSendingSlackMessageEvent'
  ) p where v is not null and v <> '' and v not in ('erased@erased.invalid', '#erased', '[erased]');

  -- Bots already at work on these notifications finish first, and none starts
  -- until the erasure commits: a batch of a catch-up bot (the projection)
  -- that read a notification before the erasure would write its view after
  -- it, with the data in it; so would a saga evaluation. The same advisory
  -- locks they take (src/bots/catchUp.ts, src/notification/saga.bot.ts),
  -- checkpoints first, then sagas in id order, as they take them.
  if p_execute then
    perform pg_advisory_xact_lock(hashtextextended('checkpoint ' || k.name, 0)) from tidings.checkpoints k order by k.name;
    perform pg_advisory_xact_lock(hashtextextended('saga ' || i, 0)) from unnest(ids) i order by i;
  end if;

  -- What still waits to be handled. A saga waits for its deadline long after
  -- its notification has an outcome, and only reads what is erased: not counted.
  for consumer in select sc.stream, sc.concern, sc.record_types from tidings.stream_consumers sc
           join tidings.streams st on st.name = sc.stream
           where st.kind <> 'saga' order by 1, 2 loop
    execute format($q$
      select coalesce(jsonb_agg(jsonb_build_object('stream', $1, 'position', r.position, 'id', r.id, 'type', r.type,
                                                   'concern', $2, 'status', coalesce(h.status::text, 'AvailableByDefault')) order by r.position), '[]')
      from %s r left join %s h on h.position = r.position and h.concern = $2
      where r.id = any ($3) and ($4::text[] is null or r.type = any ($4)) and (h.status is null or h.status::text <> all ($5))$q$,
      tidings.stream_table(consumer.stream), tidings.stream_table(consumer.stream, '__handling'))
      into rows_of using consumer.stream, consumer.concern, ids, consumer.record_types, settled;
    waiting := waiting || rows_of::jsonb;
  end loop;
  if p_execute and jsonb_array_length(waiting) > 0 then
    raise exception 'entity "%" has work still waiting to be handled (% records, first: % position % for %, %): wait for it to finish, or stop it with npm run redrive, then erase',
      p_entity_id, jsonb_array_length(waiting), waiting->0->>'stream', waiting->0->>'position', waiting->0->>'concern', waiting->0->>'status'
      using errcode = 'TD008';
  end if;

  if p_execute then
    perform tidings.begin_erasure();
  end if;

  -- Every stream (but the erasures'), its handling and its history: the
  -- entity's own records in entity.events, its notifications' everywhere else.
  for declared in select st.name from tidings.streams st where st.name <> 'entity.erasures' order by st.name loop
    execute format($q$
      with target as (
        select r.position, r.payload as was_payload, r.tags as was_tags,
               entity.redact(r.payload, entity.values_for($2, $3, r.id)) as payload,
               entity.redact(r.tags, entity.values_for($2, $3, r.id)) as tags
        from %1$s r where r.id = any ($1)
      ), changed as (
        select t.position, t.payload, t.tags from target t where (t.was_payload, t.was_tags) is distinct from (t.payload, t.tags)
      )%2$s$q$, tidings.stream_table(declared.name),
      case when p_execute
        then format(', done as (update %s r set payload = c.payload, tags = c.tags from changed c where r.position = c.position returning 1) select count(*) from done', tidings.stream_table(declared.name))
        else ' select count(*) from changed' end)
      into n using case when declared.name = 'entity.events' then array[p_entity_id] else ids end, personal, own;
    places := places || jsonb_build_object('place', declared.name, 'rows', n);

    execute format($q$
      with target as (
        select h.position, h.concern, (h.last_error, h.last_reason, h.last_details) as was,
               entity.scrub(h.last_error, entity.values_for($2, $3, r.id)) as last_error,
               entity.scrub(h.last_reason, entity.values_for($2, $3, r.id)) as last_reason,
               entity.redact(h.last_details, entity.values_for($2, $3, r.id)) as last_details
        from %1$s h join %2$s r on r.position = h.position where r.id = any ($1)
      ), changed as (
        select t.position, t.concern, t.last_error, t.last_reason, t.last_details from target t
        where t.was is distinct from (t.last_error, t.last_reason, t.last_details)
      )%3$s$q$, tidings.stream_table(declared.name, '__handling'), tidings.stream_table(declared.name),
      case when p_execute
        then format(', done as (update %s h set last_error = c.last_error, last_reason = c.last_reason, last_details = c.last_details
                      from changed c where h.position = c.position and h.concern = c.concern returning 1) select count(*) from done',
                    tidings.stream_table(declared.name, '__handling'))
        else ' select count(*) from changed' end)
      into n using case when declared.name = 'entity.events' then array[p_entity_id] else ids end, personal, own;
    places := places || jsonb_build_object('place', declared.name || '__handling', 'rows', n);

    execute format($q$
      with target as (
        select h.entry, (h.reason, h.details) as was, entity.scrub(h.reason, entity.values_for($2, $3, r.id)) as reason,
               entity.redact(h.details, entity.values_for($2, $3, r.id)) as details
        from %1$s h join %2$s r on r.position = h.position where r.id = any ($1)
      ), changed as (
        select t.entry, t.reason, t.details from target t where t.was is distinct from (t.reason, t.details)
      )%3$s$q$, tidings.stream_table(declared.name, '__handling_history'), tidings.stream_table(declared.name),
      case when p_execute
        then format(', done as (update %s h set reason = c.reason, details = c.details from changed c where h.entry = c.entry returning 1)
                      select count(*) from done', tidings.stream_table(declared.name, '__handling_history'))
        else ' select count(*) from changed' end)
      into n using case when declared.name = 'entity.events' then array[p_entity_id] else ids end, personal, own;
    places := places || jsonb_build_object('place', declared.name || '__handling_history', 'rows', n);
  end loop;

  -- Idempotency keys: the request's hash is a fingerprint of its content;
  -- the key stays (and keeps its notification), the fingerprint goes. The
  -- same request again is then refused (the key was used with another).
  if p_execute then
    with done as (
      update api.idempotency_keys k set request_sha256 = sha256(convert_to('erased ' || k.tracking_id, 'UTF8'))
      where k.tracking_id = any (ids) and k.request_sha256 <> sha256(convert_to('erased ' || k.tracking_id, 'UTF8'))
      returning 1)
    select count(*) into n from done;
  else
    select count(*) into n from api.idempotency_keys k
    where k.tracking_id = any (ids) and k.request_sha256 <> sha256(convert_to('erased ' || k.tracking_id, 'UTF8'));
  end if;
  places := places || jsonb_build_object('place', 'api.idempotency_keys', 'rows', n);

  -- graphile-worker's jobs point at records ({stream, position, id}); their
  -- last error may quote an address.
  with changed as (
    select j.id, entity.redact(j.payload::jsonb, entity.values_for(personal, own, j.payload::jsonb->>'id'))::json as payload,
           entity.scrub(j.last_error, entity.values_for(personal, own, j.payload::jsonb->>'id')) as last_error
    from graphile_worker._private_jobs j
    where j.payload::jsonb->>'id' = any (ids || p_entity_id)
  ), differing as (
    select c.* from changed c join graphile_worker._private_jobs j using (id)
    where (j.payload::jsonb, j.last_error) is distinct from (c.payload::jsonb, c.last_error)
  )
  select count(*) into n from differing;
  if p_execute and n > 0 then
    update graphile_worker._private_jobs j
    set payload = entity.redact(j.payload::jsonb, entity.values_for(personal, own, j.payload::jsonb->>'id'))::json,
        last_error = entity.scrub(j.last_error, entity.values_for(personal, own, j.payload::jsonb->>'id'))
    where j.payload::jsonb->>'id' = any (ids || p_entity_id);
  end if;
  places := places || jsonb_build_object('place', 'graphile_worker.jobs', 'rows', n);

  -- Notifications the projection passed over keep the error it met.
  select count(*) into n from tidings.checkpoint_failures f
  where f.id = any (ids) and f.error is distinct from entity.scrub(f.error, entity.values_for(personal, own, f.id));
  if p_execute and n > 0 then
    update tidings.checkpoint_failures f set error = entity.scrub(f.error, entity.values_for(personal, own, f.id))
    where f.id = any (ids) and f.error is distinct from entity.scrub(f.error, entity.values_for(personal, own, f.id));
  end if;
  places := places || jsonb_build_object('place', 'tidings.checkpoint_failures', 'rows', n);

  if not p_execute then
    return jsonb_build_object('entityId', p_entity_id, 'executed', false, 'notifications', ids,
                              'places', places, 'waiting', waiting, 'erasure', null);
  end if;

  perform tidings.end_erasure();

  -- The entity is gone: a new notification to it is refused as to an unknown entity.
  if (select e.type from entity.events e where e.id = p_entity_id order by e.position desc limit 1) = 'EntityChangedEvent' then
    perform tidings.append('entity.events', jsonb_build_array(jsonb_build_object(
      'id', p_entity_id, 'type', 'EntityRemovedEvent',
      'payload', jsonb_build_object('entityId', p_entity_id, 'removedBy', p_erased_by))));
  end if;

  select coalesce(jsonb_object_agg(p->>'place', (p->>'rows')::bigint), '{}') into counts
  from jsonb_array_elements(places) p where (p->>'rows')::bigint > 0;
  select a.position into erasure from tidings.append('entity.erasures', jsonb_build_array(jsonb_build_object(
    'id', p_entity_id, 'type', 'EntityErasedEvent',
    'payload', jsonb_build_object(
      'entityId', p_entity_id,
      'erasedBy', p_erased_by,
      -- The reason is scrubbed too: "as Ada Lovelace asked" would keep her name.
      'reason', entity.scrub(p_reason, personal),
      'databaseRole', tidings.session_actor(),
      'notifications', to_jsonb(ids),
      'rows', counts)))) a;
  insert into tidings.erased_records (id, erasure_stream, erasure_position)
  select i, 'entity.erasures', erasure.position from unnest(ids) i
  on conflict (id) do nothing;

  return jsonb_build_object('entityId', p_entity_id, 'executed', true, 'notifications', ids,
                            'places', places, 'waiting', waiting,
                            'erasure', (select jsonb_build_object('stream', 'entity.erasures', 'position', r.position, 'recordedAt', r.recorded_at)
                                        from entity.erasures r where r.position = erasure.position));
end;
$$;
comment on function entity.erase_entity(text, text, text, boolean) is
  'Erase an entity''s personal data from every stream, handling row, idempotency key and job (p_execute), or count what would change; appends the erasure to entity.erasures. Operators only (npm run erase).';
revoke execute on function entity.erase_entity(text, text, text, boolean) from public;
grant usage on schema entity to tidings_operator;
grant execute on function entity.erase_entity(text, text, text, boolean) to tidings_operator;

-- ---------------------------------------------------------------------------
-- audit.erasures: every erasure, who, when, why, and what it rewrote.
-- ---------------------------------------------------------------------------
create view audit.erasures with (security_invoker = false) as
select
  r.id as entity_id,
  r.recorded_at as erased_at,
  r.payload->>'erasedBy' as erased_by,
  r.payload->>'reason' as reason,
  r.payload->>'databaseRole' as database_role,
  array(select jsonb_array_elements_text(r.payload->'notifications')) as notifications,
  r.payload->'rows' as rows_rewritten,
  r.position
from entity.erasures r;
comment on view audit.erasures is
  'Every erasure of an entity''s personal data (entity.erasures): who, when, why, which notifications, and how many rows it rewrote where.';
comment on column audit.erasures.entity_id is 'The entity whose personal data was erased.';
comment on column audit.erasures.erased_at is 'When (the erasing transaction''s time).';
comment on column audit.erasures.erased_by is 'Who erased it (the name the operator gave).';
comment on column audit.erasures.reason is 'Why, as the operator wrote it (with the entity''s own values scrubbed out).';
comment on column audit.erasures.database_role is 'The database login and the role it acted as.';
comment on column audit.erasures.notifications is 'Tracking ids of the notifications whose content was erased (they are never re-driven or resent).';
comment on column audit.erasures.rows_rewritten is 'Rows rewritten, per place (stream, handling, handling history, idempotency keys, jobs).';
comment on column audit.erasures.position is 'Position of the erasure in entity.erasures.';
grant select on audit.erasures to tidings_auditor;
