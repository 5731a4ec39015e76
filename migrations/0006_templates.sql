-- Templates: versioned notification content, rendered at enqueue
-- (docs/templates.md). A template is a stream of versions: each PUT appends
-- TemplateVersionRecorded (id = the template's key, version = 1, 2, ...);
-- old versions stay readable, and a notification's client operation names
-- the key and version it was rendered from.

select tidings.declare_actor('template_admin', 'Records template versions (PUT /v1/templates/:key, admin scope).');

select tidings.declare_stream('template.versions', 'template', 'event', null,
  array['TemplateVersionRecorded'],
  'Versions of notification templates (id = template key): per channel content, per locale variants. The current template is the latest version.');

-- Versions count from 1 per key without gaps or repeats: the writer takes a
-- lock per key and counts (src/templates/template.repository.ts); this
-- index makes a second version with the same number impossible even so.
create unique index template_versions_one_per_number on template.versions (id, ((payload->>'version')::integer));

select tidings.declare_producer('template.versions', 'template_admin');
-- The admin compares a new version with the current one; the API (and the
-- enqueue, which renders as the reader before appending as the client)
-- reads them.
select tidings.declare_reader('template.versions', 'template_admin');
select tidings.declare_reader('template.versions', 'reader', true);

-- ===========================================================================
-- Many recipients: one request (`entityIds`, up to 1,000) enqueues one
-- notification per entity under one idempotency key, whose row keeps every
-- tracking id, in the order of the request's entities (tracking_id is the
-- first): a repeat answers the same list.
-- ===========================================================================
alter table api.idempotency_keys add column tracking_ids text[]
  check (tracking_ids is null or (cardinality(tracking_ids) between 1 and 1000 and tracking_ids[1] = tracking_id));
comment on column api.idempotency_keys.tracking_ids is
  'A request to many entities: the notification of each, in the order of its entityIds (null for a request to one entity).';

-- The SQL API to many entities, in the caller's transaction, like
-- notification.send_notification_to_entity (0003), which it calls for each
-- entity (so every rule it checks holds here too):
--
--   select * from notification.send_notification_to_entities(array['ada', 'bob'], 'Maintenance tonight', 'From 22:00.');
--
-- Answers one row per entity, in order: (entity_id, tracking_id). All or
-- nothing: an unknown entity (TD006) or a bad field aborts the statement.
-- One idempotency key covers the request; a repeat answers the same rows.

-- The tracking ids of a request to many entities, recorded under the
-- caller's key once they are known. Security definer, like
-- api.claim_idempotency_key: a caller reaches only its own keys.
create function api.record_idempotency_tracking_ids(p_key text, p_ids text[]) returns void
language sql security definer set search_path = pg_catalog, pg_temp as $$
  update api.idempotency_keys set tracking_id = p_ids[1], tracking_ids = p_ids
  where scope = 'sql:' || session_user and key = p_key and tracking_ids is null
$$;
create function api.idempotency_tracking_ids(p_key text) returns text[]
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select tracking_ids from api.idempotency_keys where scope = 'sql:' || session_user and key = p_key
$$;
revoke execute on function api.record_idempotency_tracking_ids(text, text[]) from public;
revoke execute on function api.idempotency_tracking_ids(text) from public;
grant execute on function api.record_idempotency_tracking_ids(text, text[]) to tidings_client;
grant execute on function api.idempotency_tracking_ids(text) to tidings_client;

create function notification.send_notification_to_entities(
  entity_ids text[],
  subject text,
  text_body text,
  html_body text default null,
  markdown_body text default null,
  channels text[] default null,
  tags jsonb default '{}',
  idempotency_key text default null
) returns table (entity_id text, tracking_id text)
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  ids text[] := '{}';
  claimed record;
  known text[];
  i integer;
begin
  if entity_ids is null or cardinality(entity_ids) not between 1 and 1000 then
    raise exception 'entity_ids: must name 1-1000 entities' using errcode = '22023';
  end if;
  if exists (select 1 from unnest(entity_ids) e where e is null)
     or (select count(distinct e) from unnest(entity_ids) e) <> cardinality(entity_ids) then
    raise exception 'entity_ids: must not repeat an entity or hold null' using errcode = '22023';
  end if;
  if idempotency_key is not null then
    select c.tracking_id, c.created into claimed
    from api.claim_idempotency_key(idempotency_key, jsonb_strip_nulls(jsonb_build_object(
      'entityIds', to_jsonb(entity_ids), 'subject', subject, 'text', text_body, 'html', html_body,
      'markdown', markdown_body, 'channels', to_jsonb(channels), 'tags', coalesce(tags, '{}')))) c;
    if not claimed.created then
      known := api.idempotency_tracking_ids(idempotency_key);
      if known is null then
        raise exception 'idempotency key "%" was already used for a notification to one entity (%)', idempotency_key, claimed.tracking_id
          using errcode = 'TD005';
      end if;
      return query select * from unnest(entity_ids, known);
      return;
    end if;
  end if;
  for i in 1 .. cardinality(entity_ids) loop
    ids := ids || notification.send_notification_to_entity(entity_ids[i], subject, text_body, html_body, markdown_body, channels, tags, null);
  end loop;
  if idempotency_key is not null then
    perform api.record_idempotency_tracking_ids(idempotency_key, ids);
  end if;
  return query select * from unnest(entity_ids, ids);
end;
$$;
comment on function notification.send_notification_to_entities(text[], text, text, text, text, text[], jsonb, text) is
  'Enqueue one SendNotificationToEntityOp per entity (1-1000) in the caller''s transaction; returns (entity_id, tracking_id) per entity, in order. Callers need the tidings_client role.';
revoke execute on function notification.send_notification_to_entities(text[], text, text, text, text, text[], jsonb, text) from public;
grant execute on function notification.send_notification_to_entities(text[], text, text, text, text, text[], jsonb, text) to tidings_client;

-- ===========================================================================
-- Scheduled sends (docs/templates.md, "Scheduling"). A client operation with
-- `sendAt` is a record now and a graphile-worker job that runs at sendAt:
-- the notification bot's consumer runs its jobs at payload->>'sendAt' (at
-- once when absent), and the handling sweep re-queues a lost job at the same
-- time, so a schedule survives restarts. A job that runs early all the same
-- (an operator's re-drive) waits (self-cancel) until sendAt.
--
-- A cancel before the send is the scheduler's: under the notification's
-- lock (the notification bot takes it too for a scheduled operation), if the
-- bot has not handled it yet, it appends SendNotificationRequestedEvent and
-- NotificationCancelledEvent, the notification's outcome (no alert: the
-- reaction bot does not consume it). The bot then finds it cancelled and
-- sends nothing.
-- ===========================================================================
update tidings.stream_consumers set run_at_field = 'sendAt'
where stream = 'notification.client_operations' and concern = 'notification_bot';

select tidings.declare_record_types('notification.events', array['NotificationCancelledEvent']);
select tidings.declare_actor('scheduler', 'Cancels scheduled notifications before they are sent (POST /v1/notifications/:id/cancel).');
select tidings.declare_producer('notification.events', 'scheduler');
select tidings.declare_reader('notification.events', 'scheduler');
select tidings.declare_reader('notification.client_operations', 'scheduler');
