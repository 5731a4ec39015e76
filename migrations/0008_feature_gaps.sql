-- Feature gaps of issue 12 (docs/templates.md, docs/audit.md, docs/webhooks.md):
-- the SQL enqueue functions take a category and a time to send at, as the
-- HTTP API does; audit.notifications says scheduled and cancelled and names
-- a notification's schedule, category and template version; and the webhook
-- bot, which may append to webhook.endpoints only to disable an endpoint,
-- cannot register or remove one.

-- ===========================================================================
-- The SQL API, with `category` and `send_at` (docs/api.md, "Enqueue in SQL").
-- New trailing parameters with defaults: every call written for the old
-- functions means the same. Replaced rather than overloaded: beside the old
-- signature, a call naming only the first arguments would be ambiguous.
--
--   select notification.send_notification_to_entity('ada', 'Password changed', 'If it was not you, ...', category => 'security');
--   select notification.send_notification_to_entity('ada', 'Weekly digest', '...', send_at => now() + interval '1 day');
--
-- Templates stay the HTTP API's: they are rendered (Liquid) at enqueue, in
-- the application; a SQL caller gives the content itself.
-- ===========================================================================
drop function notification.send_notification_to_entities(text[], text, text, text, text, text[], jsonb, text);
drop function notification.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text);

create function notification.send_notification_to_entity(
  entity_id text,
  subject text,
  text_body text,
  html_body text default null,
  markdown_body text default null,
  channels text[] default null,
  tags jsonb default '{}',
  idempotency_key text default null,
  category text default null,
  send_at timestamptz default null
) returns text
-- Security invoker: the append runs with the caller's privileges (those of
-- tidings_client, inherited by a login role granted it), and the record's
-- recorded_by names the caller.
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  tracking_id text;
  created boolean;
  payload jsonb;
  -- Trimmed of what JavaScript's String.prototype.trim removes, as the zod schema does
  -- (test/int/enqueueRules.int.test.ts holds the two to one result).
  trimmed_subject text := regexp_replace(subject, '^[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+|[\t\n\v\f\r \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff]+$', '', 'g');
  tag record;
begin
  if entity_id is null or length(entity_id) > 200 or entity_id !~ '^[A-Za-z0-9][A-Za-z0-9._:@-]*$' then
    raise exception 'entity_id: must be 1-200 characters, start with a letter or digit and contain only letters, digits and . _ : @ -'
      using errcode = '22023';
  end if;
  if subject ~ '[\r\n]' then
    raise exception 'subject: must be one line (no CR or LF): it becomes an email header' using errcode = '22023';
  end if;
  if trimmed_subject is null or trimmed_subject = '' or length(trimmed_subject) > 998 then
    raise exception 'subject: must be 1-998 characters' using errcode = '22023';
  end if;
  if text_body is null or text_body = '' or length(text_body) > 100000 then
    raise exception 'text_body: must be 1-100000 characters' using errcode = '22023';
  end if;
  if length(html_body) > 500000 then
    raise exception 'html_body: must be at most 500000 characters' using errcode = '22023';
  end if;
  if length(markdown_body) > 100000 then
    raise exception 'markdown_body: must be at most 100000 characters' using errcode = '22023';
  end if;
  if channels is not null and (
       cardinality(channels) not between 1 and 2
       or exists (select 1 from unnest(channels) c where c is null or c not in ('email', 'slack'))
       or (select count(distinct c) from unnest(channels) c) <> cardinality(channels)) then
    raise exception 'channels: must be 1-2 distinct channels out of email, slack (or null for the entity''s preferences)'
      using errcode = '22023';
  end if;
  tags := coalesce(tags, '{}');
  if jsonb_typeof(tags) <> 'object' then
    raise exception 'tags: must be a JSON object of name to string value' using errcode = '22023';
  end if;
  if (select count(*) from jsonb_object_keys(tags)) > 20 then
    raise exception 'tags: at most 20 tags' using errcode = '22023';
  end if;
  for tag in select key, value from jsonb_each(tags) loop
    if tag.key !~ '^[A-Za-z0-9_.:-]{1,64}$' or jsonb_typeof(tag.value) <> 'string' or length(tag.value #>> '{}') > 256 then
      raise exception 'tags: tag "%" must have a name of letters, digits and _ . : - and a string value of at most 256 characters', tag.key
        using errcode = '22023';
    end if;
  end loop;
  if category is not null and (length(category) > 64 or category !~ '^[a-z][a-z0-9_-]*$') then
    raise exception 'category: must be 1-64 characters, start with a lower-case letter and contain only lower-case letters, digits, _ and -'
      using errcode = '22023';
  end if;
  if send_at is not null and not isfinite(send_at) then
    raise exception 'send_at: must be a finite time (now() + interval ''1 day'', say)' using errcode = '22023';
  end if;
  if idempotency_key is not null and (idempotency_key = '' or length(idempotency_key) > 255) then
    raise exception 'idempotency_key: must be 1-255 characters' using errcode = '22023';
  end if;
  if cardinality(api.unknown_entities(array[entity_id])) > 0 then
    raise exception 'entity_id: unknown entity "%": create it first', entity_id using errcode = 'TD006';
  end if;

  payload := jsonb_strip_nulls(jsonb_build_object(
    'entityId', entity_id,
    'subject', trimmed_subject,
    'text', text_body,
    'html', html_body,
    'markdown', markdown_body,
    'channels', to_jsonb(channels),
    'tags', tags,
    'idempotencyKey', idempotency_key,
    'category', category,
    -- UTC with milliseconds, as JavaScript writes it (the HTTP API's sendAt); the job runs then (run_at_field).
    'sendAt', to_char(send_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')));
  if idempotency_key is null then
    tracking_id := gen_random_uuid()::text;
  else
    -- The key is the caller's own (scoped to its login): a repeat returns the
    -- notification it made, another request under it is refused.
    select c.tracking_id, c.created into tracking_id, created
    from api.claim_idempotency_key(idempotency_key, payload) c;
    if not created then
      return tracking_id;
    end if;
  end if;

  perform tidings.append(
    'notification.client_operations',
    jsonb_build_array(jsonb_build_object('id', tracking_id, 'type', 'SendNotificationToEntityOp', 'tags', tags, 'payload', payload)));
  return tracking_id;
end;
$$;

comment on function notification.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text, text, timestamptz) is
  'Enqueue SendNotificationToEntityOp in the caller''s transaction; returns the tracking id. category: the entity''s preferences for it apply; send_at: not before then (cancellable until then). Callers need the tidings_client role.';
revoke execute on function notification.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text, text, timestamptz) from public;
grant execute on function notification.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text, text, timestamptz) to tidings_client;

create function notification.send_notification_to_entities(
  entity_ids text[],
  subject text,
  text_body text,
  html_body text default null,
  markdown_body text default null,
  channels text[] default null,
  tags jsonb default '{}',
  idempotency_key text default null,
  category text default null,
  send_at timestamptz default null
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
      'markdown', markdown_body, 'channels', to_jsonb(channels), 'tags', coalesce(tags, '{}'),
      'category', category, 'sendAt', to_char(send_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')))) c;
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
    ids := ids || notification.send_notification_to_entity(entity_ids[i], subject, text_body, html_body, markdown_body, channels, tags, null, category, send_at);
  end loop;
  if idempotency_key is not null then
    perform api.record_idempotency_tracking_ids(idempotency_key, ids);
  end if;
  return query select * from unnest(entity_ids, ids);
end;
$$;
comment on function notification.send_notification_to_entities(text[], text, text, text, text, text[], jsonb, text, text, timestamptz) is
  'Enqueue one SendNotificationToEntityOp per entity (1-1000) in the caller''s transaction, with an optional category and send_at; returns (entity_id, tracking_id) per entity, in order. Callers need the tidings_client role.';
revoke execute on function notification.send_notification_to_entities(text[], text, text, text, text, text[], jsonb, text, text, timestamptz) from public;
grant execute on function notification.send_notification_to_entities(text[], text, text, text, text, text[], jsonb, text, text, timestamptz) to tidings_client;

-- ===========================================================================
-- audit.notifications: a notification waiting for its sendAt is `scheduled`
-- (it read `pending`), one cancelled before it is `cancelled` with
-- NotificationCancelledEvent as its outcome (it read `pending` too); and
-- each row names its schedule, category and template version, so "which
-- template version did Ada get on 3 March?" is a query of the auditor's.
-- ===========================================================================
create or replace view audit.notifications with (security_invoker = false) as
select
  c.id as tracking_id,
  c.payload->>'entityId' as entity_id,
  c.payload->>'subject' as subject,
  c.tags,
  c.recorded_at as requested_at,
  case when jsonb_typeof(c.payload->'channels') = 'array'
       then array(select jsonb_array_elements_text(c.payload->'channels')) end as channels_requested,
  c.payload->>'idempotencyKey' as idempotency_key,
  case l.type
    when 'SendNotificationRequestedEvent' then 'requested'
    when 'PreparedToSendOnAllChannelsEvent' then 'sending'
    when 'PreparedToSendOnSomeChannelsEvent' then 'sending'
    when 'FellBackToNextChannelEvent' then 'sending'
    when 'ResendRequestedEvent' then 'sending'
    when 'SentOnAllPreparedChannelsEvent' then 'sent'
    when 'SentOnSomePreparedChannelsEvent' then 'partially_sent'
    when 'CouldNotSendOnAnyPreparedChannelEvent' then 'failed'
    when 'CouldNotGetOrUseAudienceEvent' then 'failed'
    when 'AudienceOptedOutOfAllChannelsEvent' then 'not_sent'
    when 'CouldNotPrepareToSendOnAnyChannelEvent' then 'not_sent'
    when 'NotificationCancelledEvent' then 'cancelled'
    else case when l.type is null and (c.payload->>'sendAt')::timestamptz > now() then 'scheduled' else 'pending' end
  end as status,
  case when l.terminal then l.type end as outcome_type,
  case when l.terminal then l.recorded_at end as outcome_at,
  case when l.terminal then coalesce((l.payload->>'timedOut')::boolean, false) end as timed_out,
  case when l.terminal then coalesce(array(select jsonb_array_elements_text(l.payload->'sent')), '{}') end as sent_channels,
  case
    when l.terminal is not true then null
    when l.payload ? 'failed' then array(select jsonb_array_elements_text(l.payload->'failed'))
    when l.payload ? 'skipped' then array(select s->>'channel' from jsonb_array_elements(l.payload->'skipped') s)
    else '{}'
  end as failed_channels,
  case
    when l.terminal is not true then null
    when l.type = 'SentOnAllPreparedChannelsEvent' then null -- delivered (by a fallback channel, perhaps)
    when l.type = 'NotificationCancelledEvent' then null -- cancelled before its time: not a failure
    when l.type = 'CouldNotGetOrUseAudienceEvent' then l.payload->>'reason'
    when l.type = 'AudienceOptedOutOfAllChannelsEvent' then 'opted out of every channel'
    when l.type = 'CouldNotPrepareToSendOnAnyChannelEvent' then coalesce(
      (select string_agg((s->>'channel') || ': ' || (s->>'reason'), '; ') from jsonb_array_elements(l.payload->'skipped') s),
      'no channel wanted')
    else (select string_agg((op->>'channel') || ': ' || coalesce(op->>'error', 'failed'), '; ')
          from jsonb_array_elements(l.payload->'operations') op where op->>'outcome' = 'failed')
  end as failure_reason,
  a.recorded_at is not null as internal_team_alerted,
  a.recorded_at as alerted_at,
  c.position as client_operation_position,
  -- Added by 0008 (a view's new columns come last).
  (c.payload->>'sendAt')::timestamptz as send_at,
  c.payload->>'category' as category,
  c.payload->'template'->>'key' as template_key,
  (c.payload->'template'->>'version')::integer as template_version,
  c.payload->'template'->>'locale' as template_locale
from notification.client_operations c
left join lateral (
  -- The latest event that moves the notification on (the alert comes after the outcome, so it is left out).
  select e.type, e.payload, e.recorded_at,
         e.type in ('SentOnAllPreparedChannelsEvent', 'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent',
                    'CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent', 'CouldNotPrepareToSendOnAnyChannelEvent',
                    'NotificationCancelledEvent') as terminal
  from notification.events e
  where e.id = c.id and e.type not in ('FailedNotificationSentToInternalTeamEvent', 'NotificationDelayedEvent')
    -- A resend that sent nothing (every channel skipped) does not move it on.
    and not (e.type = 'ResendRequestedEvent' and e.payload->'operations' = '[]'::jsonb)
  order by e.position desc limit 1
) l on true
left join lateral (
  select e.recorded_at from notification.events e
  where e.id = c.id and e.type = 'FailedNotificationSentToInternalTeamEvent'
  order by e.position limit 1
) a on true
where c.type = 'SendNotificationToEntityOp';

comment on column audit.notifications.status is 'pending (not picked up yet), scheduled (waiting for its send_at), requested, sending, sent, partially_sent, failed, not_sent (the entity had no channel to use: opted out of every one, or no contact detail; not a failure), or cancelled (before its send_at; not a failure).';
comment on column audit.notifications.outcome_type is 'The outcome event (SentOnAllPreparedChannelsEvent, CouldNotGetOrUseAudienceEvent, NotificationCancelledEvent, ...); null while under way.';
comment on column audit.notifications.send_at is 'A scheduled notification''s time (sendAt or delay): not sent before then; null: sent at once.';
comment on column audit.notifications.category is 'The notification''s category (security, marketing, ...), whose preferences applied; null: none.';
comment on column audit.notifications.template_key is 'The template it was rendered from; null: the client gave the content.';
comment on column audit.notifications.template_version is 'The template version it was rendered with (1, 2, ...).';
comment on column audit.notifications.template_locale is 'The template''s locale variant used; null: the default content (or no template).';

-- ===========================================================================
-- webhook.endpoints: the webhook bot produces into it for one reason, to
-- disable an endpoint that keeps failing. Its INSERT grant covers every
-- record type, so this guard refuses the others: a bot (or whoever acts as
-- it) registering an endpoint would have tidings POST where it likes, and
-- removing one would stop a client's deliveries. A role that may also act
-- as the endpoint admin (the service login itself, the owner) is not
-- restricted by it.
-- ===========================================================================
create function webhook.tg_guard_endpoint_writers() returns trigger
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  -- A type the stream does not declare is left to its check constraint (declared_type), which names the problem.
  if new.type <> 'WebhookEndpointDisabledEvent'
     and exists (select 1 from tidings.streams s where s.name = 'webhook.endpoints' and new.type = any(s.record_types))
     and pg_has_role(current_user, 'tidings_webhook_bot', 'USAGE')
     and not pg_has_role(current_user, 'tidings_webhook_admin', 'USAGE') then
    raise exception 'the webhook bot may append only WebhookEndpointDisabledEvent to webhook.endpoints, not %', new.type
      using errcode = '42501';
  end if;
  return new;
end;
$$;
comment on function webhook.tg_guard_endpoint_writers() is
  'Refuses a record other than WebhookEndpointDisabledEvent on webhook.endpoints from the webhook bot (it disables endpoints; only the admin registers and removes them).';
revoke execute on function webhook.tg_guard_endpoint_writers() from public;
create trigger guard_endpoint_writers before insert on webhook.endpoints
  for each row execute function webhook.tg_guard_endpoint_writers();
