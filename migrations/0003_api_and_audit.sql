-- The interfaces around the notification subsystem: the HTTP API's tables
-- (API keys, idempotency keys) and grants, the SQL API (enqueue in the
-- caller's transaction), and the SQL audit interface (schema audit, role
-- tidings_auditor). See docs/api.md and docs/audit.md.

-- ===========================================================================
-- The HTTP API: API keys (stored hashed), idempotency keys for POST
-- /v1/notifications, the grants the API's reads need, and indexes for the
-- notification list. See docs/api.md.
-- ===========================================================================

create schema api;
comment on schema api is 'Tables of the HTTP API: API keys and the idempotency keys of enqueue requests.';

-- ---------------------------------------------------------------------------
-- API keys. Only the SHA-256 of a secret is kept: secrets are 256 random bits,
-- so a fast hash is enough (nothing to brute-force) and lets a request find
-- its key with one index lookup. Keys are revoked, never deleted, so the
-- idempotency keys below keep pointing at the key that made them.
-- ---------------------------------------------------------------------------
create table api.keys (
  id uuid primary key default gen_random_uuid(),
  name text not null check (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,99}$'),
  secret_sha256 bytea not null unique check (length(secret_sha256) = 32),
  -- The last four characters of the secret, so `apikeys list` can tell keys apart.
  hint text not null check (length(hint) = 4),
  scopes text[] not null check (
    cardinality(scopes) between 1 and 4
    and scopes <@ array['producer', 'reader', 'entities', 'admin']
  ),
  created_at timestamptz not null default now(),
  created_by text not null,
  revoked_at timestamptz,
  revoked_reason text check (revoked_reason is null or btrim(revoked_reason) <> ''),
  check ((revoked_at is null) = (revoked_reason is null))
);
comment on table api.keys is
  'API keys: name, scopes and the SHA-256 of the secret (the secret itself is shown once, at creation, and never stored).';
-- Read and written only by the service itself (authentication and scripts/apikeys.ts).
revoke all on api.keys from public;
grant usage on schema api to tidings_service;
grant select, insert, update on api.keys to tidings_service;

-- ---------------------------------------------------------------------------
-- Idempotency keys: one row per key ever used, per caller. A key belongs to
-- the caller that used it: an API key ('api:<key id>') or a SQL login
-- ('sql:<login>'), so two clients may use the same key for two notifications
-- and neither learns anything of the other's. The tracking id of a new key is
-- random and kept here: no caller can know another's tracking id in advance
-- (a client may append a client operation under any id it likes; a derived
-- id would let it take another caller's notification first). Never expires. The primary key is what makes
-- concurrent duplicates safe: the second insert waits for the first
-- transaction and then finds its row. Only the service (the HTTP API) reads
-- and writes the table; SQL callers reach it through the enqueue function.
-- ---------------------------------------------------------------------------
create table api.idempotency_keys (
  scope text not null check (scope ~ '^(api|sql):.+$'),
  key text not null check (length(key) between 1 and 255),
  -- SHA-256 of the request as validated (canonical JSON, defaults applied):
  -- the same key with another request is refused.
  request_sha256 bytea not null check (length(request_sha256) = 32),
  tracking_id text not null,
  api_key_id uuid references api.keys (id),
  created_at timestamptz not null default now(),
  primary key (scope, key)
);
comment on table api.idempotency_keys is
  'Every idempotency key used to enqueue a notification, per caller (API key or SQL login): the request it was first used with and the notification it created.';
revoke all on api.idempotency_keys from public;
grant select, insert on api.idempotency_keys to tidings_service;

-- ---------------------------------------------------------------------------
-- Request rate limits per API key (docs/api.md, "Limits"). A key may make
-- rate_limit requests per window (null: the API process's API_RATE_LIMIT);
-- the window's length is API_RATE_LIMIT_WINDOW_SECONDS. Every API process
-- counts in the same row, timed by the database's clock, so the limit holds
-- for the key across processes. A window starts at the key's first request
-- after the previous window ended (not on a shared boundary, so keys do not
-- all reset at once).
--
-- The counter is bumped on every request, in the statement that looks the
-- key up (src/auth/apiKeys.ts, admitRequests), so it must be cheap:
-- - UNLOGGED: an update writes no WAL, and a transaction that wrote no WAL
--   commits without waiting for a WAL flush; a crash or a failover resets
--   the counters, which only forgives a window;
-- - fillfactor 50 and no index on the updated columns: updates stay HOT
--   (heap-only), so the hot row of a busy key does not grow its index.
-- ---------------------------------------------------------------------------
alter table api.keys add column rate_limit integer check (rate_limit > 0);
comment on column api.keys.rate_limit is
  'Requests this key may make per rate-limit window; null: the API''s default (API_RATE_LIMIT).';

create unlogged table api.key_request_windows (
  key_id uuid primary key references api.keys (id),
  window_start timestamptz not null,
  -- Requests counted in this window, refused ones included.
  used bigint not null check (used > 0)
) with (fillfactor = 50);
comment on table api.key_request_windows is
  'The current rate-limit window of each API key: when it started and how many requests it has counted (unlogged: reset by a crash).';
revoke all on api.key_request_windows from public;
grant select, insert, update on api.key_request_windows to tidings_service;

-- Claim an idempotency key for the calling SQL login (session_user: the
-- login, whatever role it acts as), in the caller's transaction: the
-- tracking id and true the first time; the same tracking id and false for
-- the same request again; an error for another request. Security definer so
-- a client needs no privilege on the table: it can claim and look up only
-- its own keys.
create function api.claim_idempotency_key(p_key text, p_request jsonb)
returns table (tracking_id text, created boolean)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  caller_scope text := 'sql:' || session_user;
  request bytea := sha256(convert_to(p_request::text, 'UTF8'));
  known record;
begin
  if p_key is null or p_key = '' or length(p_key) > 255 then
    raise exception 'idempotency_key: must be 1-255 characters' using errcode = '22023';
  end if;
  tracking_id := gen_random_uuid()::text;
  insert into api.idempotency_keys (scope, key, request_sha256, tracking_id)
  values (caller_scope, p_key, request, tracking_id)
  on conflict do nothing;
  if found then
    created := true;
    return next;
    return;
  end if;
  select k.request_sha256, k.tracking_id into known from api.idempotency_keys k where k.scope = caller_scope and k.key = p_key;
  if known.request_sha256 <> request then
    raise exception 'idempotency key "%" was already used with a different request (it created notification %)', p_key, known.tracking_id
      using errcode = 'TD005', hint = 'Repeat the original request exactly, or use a new key for a new notification.';
  end if;
  tracking_id := known.tracking_id;
  created := false;
  return next;
end;
$$;
-- Which of these entities do not exist now (never created, or removed):
-- a notification for one of them is refused at enqueue, nothing stored.
-- Security definer: a client may not read entity.events, but may learn that
-- the entity it names is unknown.
create function api.unknown_entities(p_ids text[]) returns text[]
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce(array_agg(i order by i), '{}')
  from unnest(p_ids) as i
  where coalesce((select e.type from entity.events e where e.id = i order by e.position desc limit 1), '') <> 'EntityChangedEvent'
$$;
revoke execute on function api.unknown_entities(text[]) from public;
grant execute on function api.unknown_entities(text[]) to tidings_client, tidings_service;

revoke execute on function api.claim_idempotency_key(text, jsonb) from public;
grant usage on schema api to tidings_client;
grant execute on function api.claim_idempotency_key(text, jsonb) to tidings_client;

-- ---------------------------------------------------------------------------
-- Reads. The API reads as the reader actor: a notification's records in every
-- stream with their handling state and history (GET
-- /v1/notifications/:id/events), and the client operation of a notification
-- whose view is not written yet. Read-only, like the operator's grants in 0002.
-- ---------------------------------------------------------------------------
do $$
declare s record;
begin
  for s in select name from tidings.streams loop
    perform tidings.declare_reader(s.name, 'reader', true);
  end loop;
end $$;

-- ---------------------------------------------------------------------------
-- The notification list: newest first by request time, optionally for one
-- entity; keyset pagination on (recorded_at, position).
-- ---------------------------------------------------------------------------
create index client_operations_by_time on notification.client_operations (recorded_at, position);
create index client_operations_by_entity
  on notification.client_operations ((payload->>'entityId'), recorded_at, position);

-- ===========================================================================
-- The SQL API: enqueue a notification from SQL, inside the caller's own transaction: a
-- service in any language that shares the database can record its business
-- change and the notification about it atomically. The notification exists
-- if and only if the caller commits.
--
--   select notification.send_notification_to_entity('ada', 'Your report is ready', 'Hello.');
--
-- Checks mirror SendNotificationToEntityOp (src/notification/notification.schemas.ts)
-- so what this function accepts, the notification bot accepts too.
-- ===========================================================================
create function notification.send_notification_to_entity(
  entity_id text,
  subject text,
  text_body text,
  html_body text default null,
  markdown_body text default null,
  channels text[] default null,
  tags jsonb default '{}',
  idempotency_key text default null
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
    'idempotencyKey', idempotency_key));
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

comment on function notification.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) is
  'Enqueue SendNotificationToEntityOp in the caller''s transaction; returns the tracking id. Callers need the tidings_client role.';

-- Only clients: a service's login role gets `grant tidings_client to <role>`.
revoke execute on function notification.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) from public;
grant execute on function notification.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) to tidings_client;

-- ===========================================================================
-- The audit interface: documented, read-only views in schema `audit` that
-- answer "what happened?" in plain SQL, and the role tidings_auditor that may
-- read those views and nothing else (docs/audit.md).
--
-- The views are owned by the migrating user and created with
-- security_invoker = false (spelled out, not left to the default), so they
-- read the stream tables with their owner's privileges: the auditor needs no
-- privilege on any stream, handling table or their schemas, and has none.
--
-- Views over every stream (records, handling changes, failures, re-drives)
-- are generated from the registry by tidings.refresh_audit_views(), so they
-- cover every declared stream. A later migration that declares a stream, or a
-- new consuming actor, calls it again.

create schema audit;
comment on schema audit is
  'Read-only views answering what happened to notifications, emails, Slack messages, entities and handling. See docs/audit.md.';

-- ---------------------------------------------------------------------------
-- Indexes behind the common filters. Each view column below is defined with
-- exactly the indexed expression, so `where recipient = ...` on the view uses
-- the index. recorded_at second: "the latest N to this address" reads the
-- index backwards and stops after N.
-- ---------------------------------------------------------------------------
create index operations_recipient_idx on email.operations ((payload->'to'->>0), recorded_at);
create index operations_channel_idx on slack.operations ((payload->>'channel'), recorded_at);
-- The notification list's indexes (above) serve audit.notifications too.

-- ---------------------------------------------------------------------------
-- audit.emails: one row per email operation.
-- ---------------------------------------------------------------------------
create view audit.emails with (security_invoker = false) as
select
  o.id as notification_id,
  o.payload->>'operationId' as operation_id,
  o.payload->>'purpose' as purpose,
  o.payload->>'entityId' as entity_id,
  o.payload->'to'->>0 as recipient,
  array(select jsonb_array_elements_text(o.payload->'to')) as recipients,
  o.payload->>'subject' as subject,
  st.status,
  coalesce(h.status::text, 'AvailableByDefault') as handling_status,
  coalesce(h.attempts, 0) as attempts,
  o.recorded_at as requested_at,
  ok.recorded_at as sent_at,
  bad.recorded_at as failed_at,
  coalesce(h.last_error, bad.payload->>'error') as last_error,
  case
    when st.status = 'sent' then substring(ok.payload->>'response' from '^[2-5][0-9][0-9]')::integer
    else coalesce((bad.payload->>'smtpCode')::integer, (lf.details->'external'->>'smtpCode')::integer)
  end as smtp_code,
  ok.payload->>'response' as response,
  coalesce(ok.payload->>'messageId', o.payload->>'messageId') as message_id,
  o.tags,
  o.position as operation_position
from email.operations o
left join email.operations__handling h on h.position = o.position and h.concern = 'email_bot'
left join lateral (
  select e.recorded_at, e.payload from email.events e
  where e.id = o.id and e.type = 'SucceededInSendingEmailEvent' and e.payload->>'operationId' = o.payload->>'operationId'
  order by e.position desc limit 1
) ok on true
left join lateral (
  select e.recorded_at, e.payload from email.events e
  where e.id = o.id and e.type = 'FailedToSendEmailEvent' and e.payload->>'operationId' = o.payload->>'operationId'
  order by e.position desc limit 1
) bad on true
left join lateral (
  -- The last attempt that failed or was deferred, retried or not: its details keep the SMTP code.
  select hh.details from email.operations__handling_history hh
  where hh.position = o.position and hh.concern = 'email_bot' and hh.action in ('fail', 'self_cancel')
  order by hh.entry desc limit 1
) lf on true
left join lateral (
  -- The operation's outcome as the saga and the view take it (notification.operation_outcomes).
  select oc.outcome, oc.recorded_at from notification.operation_outcomes oc
  where oc.channel = 'email' and oc.id = o.id and oc.operation_id = o.payload->>'operationId'
) oc on true
cross join lateral (
  select case
    -- An attempt after the outcome is under way or waiting (an operator re-drove it).
    when h.status not in ('Completed', 'Failed', 'ArchivedAfterFailure', 'DisabledForRecord') and h.updated_at > oc.recorded_at then 'sending'
    when oc.outcome = 'succeeded' then 'sent'
    when oc.outcome = 'failed' then 'failed'
    when h.status = 'Completed' then 'sent'
    when h.status in ('Failed', 'ArchivedAfterFailure', 'DisabledForRecord') then 'failed'
    when h.status is null then 'pending'
    else 'sending' -- Running, or waiting for its next attempt
  end as status
) st
where o.type = 'SendEmailOp';

comment on view audit.emails is
  'One row per email operation (email.operations) with what became of it: status, attempts, times, error, SMTP reply.';
comment on column audit.emails.notification_id is 'Tracking id of the notification (the record id of every record about it).';
comment on column audit.emails.operation_id is 'Id of this email operation: <tracking id>:email, or <tracking id>:alert-<n>:email for an internal alert.';
comment on column audit.emails.purpose is 'notification (to the entity) or internal_alert (to the internal team about a failed notification).';
comment on column audit.emails.entity_id is 'The entity notified; null for internal alerts.';
comment on column audit.emails.recipient is 'The first (usually only) To address, exactly as stored. Indexed: filter on it.';
comment on column audit.emails.recipients is 'Every To address.';
comment on column audit.emails.subject is 'Subject line.';
comment on column audit.emails.status is 'pending (not tried yet), sending (being sent or waiting for a retry), sent, or failed (no further attempt unless re-driven).';
comment on column audit.emails.handling_status is 'The email_bot handling status behind status (Completed, Failed, Running, AvailableAfterFailure, ...).';
comment on column audit.emails.attempts is 'How many times email_bot took the operation up (each try, including rate-limit deferrals).';
comment on column audit.emails.requested_at is 'When the operation was recorded.';
comment on column audit.emails.sent_at is 'When the SMTP server accepted the message (latest success event); null if never.';
comment on column audit.emails.failed_at is 'When sending was given up (latest failure event); null if never.';
comment on column audit.emails.last_error is 'The last error an attempt met (kept after a later success, so retried sends show why they were retried).';
comment on column audit.emails.smtp_code is 'SMTP reply code: the accepting reply''s when sent, otherwise the last failed attempt''s (null when the failure had no SMTP reply).';
comment on column audit.emails.response is 'The SMTP server''s final reply when it accepted the message, e.g. "250 2.0.0 Ok: queued as ...".';
comment on column audit.emails.message_id is 'The Message-ID header; stable per operation, so a resend after a crash carries the same one.';
comment on column audit.emails.tags is 'The notification''s tags (JSON object).';
comment on column audit.emails.operation_position is 'Position of the operation in email.operations (the key of its handling changes).';

-- ---------------------------------------------------------------------------
-- audit.slack_messages: one row per Slack message operation.
-- ---------------------------------------------------------------------------
create view audit.slack_messages with (security_invoker = false) as
select
  o.id as notification_id,
  o.payload->>'operationId' as operation_id,
  o.payload->>'purpose' as purpose,
  o.payload->>'entityId' as entity_id,
  o.payload->>'channel' as channel,
  o.payload->>'text' as text,
  st.status,
  coalesce(h.status::text, 'AvailableByDefault') as handling_status,
  coalesce(h.attempts, 0) as attempts,
  o.recorded_at as requested_at,
  ok.recorded_at as sent_at,
  bad.recorded_at as failed_at,
  ok.payload->>'channel' as posted_channel,
  ok.payload->>'ts' as ts,
  case when st.status <> 'sent' then coalesce(bad.payload->>'slackError', lf.details->'external'->>'slackError') end as slack_error,
  case when st.status <> 'sent' then coalesce((bad.payload->>'httpStatus')::integer, (lf.details->'external'->>'httpStatus')::integer) end as http_status,
  coalesce(h.last_error, bad.payload->>'error') as last_error,
  o.tags,
  o.position as operation_position
from slack.operations o
left join slack.operations__handling h on h.position = o.position and h.concern = 'slack_bot'
left join lateral (
  select e.recorded_at, e.payload from slack.events e
  where e.id = o.id and e.type = 'SucceededInSendingSlackMessageEvent' and e.payload->>'operationId' = o.payload->>'operationId'
  order by e.position desc limit 1
) ok on true
left join lateral (
  select e.recorded_at, e.payload from slack.events e
  where e.id = o.id and e.type = 'FailedToSendSlackMessageEvent' and e.payload->>'operationId' = o.payload->>'operationId'
  order by e.position desc limit 1
) bad on true
left join lateral (
  select hh.details from slack.operations__handling_history hh
  where hh.position = o.position and hh.concern = 'slack_bot' and hh.action in ('fail', 'self_cancel')
  order by hh.entry desc limit 1
) lf on true
left join lateral (
  -- The operation's outcome as the saga and the view take it (notification.operation_outcomes).
  select oc.outcome, oc.recorded_at from notification.operation_outcomes oc
  where oc.channel = 'slack' and oc.id = o.id and oc.operation_id = o.payload->>'operationId'
) oc on true
cross join lateral (
  select case
    -- An attempt after the outcome is under way or waiting (an operator re-drove it).
    when h.status not in ('Completed', 'Failed', 'ArchivedAfterFailure', 'DisabledForRecord') and h.updated_at > oc.recorded_at then 'sending'
    when oc.outcome = 'succeeded' then 'sent'
    when oc.outcome = 'failed' then 'failed'
    when h.status = 'Completed' then 'sent'
    when h.status in ('Failed', 'ArchivedAfterFailure', 'DisabledForRecord') then 'failed'
    when h.status is null then 'pending'
    else 'sending' -- Running, or waiting for its next attempt
  end as status
) st
where o.type = 'SendSlackMessageOp';

comment on view audit.slack_messages is
  'One row per Slack message operation (slack.operations) with what became of it: status, attempts, times, channel and ts, Slack error.';
comment on column audit.slack_messages.notification_id is 'Tracking id of the notification.';
comment on column audit.slack_messages.operation_id is 'Id of this operation: <tracking id>:slack, or <tracking id>:alert-<n>:slack for an internal alert.';
comment on column audit.slack_messages.purpose is 'notification (to the entity) or internal_alert (to the internal team).';
comment on column audit.slack_messages.entity_id is 'The entity notified; null for internal alerts.';
comment on column audit.slack_messages.channel is 'The destination asked for: #channel-name or a channel/user id. Indexed: filter on it.';
comment on column audit.slack_messages.text is 'The plain-text message.';
comment on column audit.slack_messages.status is 'pending, sending (being sent or waiting for a retry), sent, or failed.';
comment on column audit.slack_messages.handling_status is 'The slack_bot handling status behind status.';
comment on column audit.slack_messages.attempts is 'How many times slack_bot took the operation up (each try, including rate-limit deferrals).';
comment on column audit.slack_messages.requested_at is 'When the operation was recorded.';
comment on column audit.slack_messages.sent_at is 'When Slack accepted the message; null if never.';
comment on column audit.slack_messages.failed_at is 'When sending was given up; null if never.';
comment on column audit.slack_messages.posted_channel is 'The channel id Slack posted into (from its answer).';
comment on column audit.slack_messages.ts is 'Slack''s message timestamp: the message''s id within the channel.';
comment on column audit.slack_messages.slack_error is 'Slack''s error code (channel_not_found, ratelimited, ...) of the failure or of the last failed attempt; null once sent.';
comment on column audit.slack_messages.http_status is 'HTTP status of the failure or of the last failed attempt; null once sent.';
comment on column audit.slack_messages.last_error is 'The last error an attempt met (kept after a later success).';
comment on column audit.slack_messages.tags is 'The notification''s tags.';
comment on column audit.slack_messages.operation_position is 'Position of the operation in slack.operations.';

-- ---------------------------------------------------------------------------
-- audit.notifications: one row per notification (client operation).
-- ---------------------------------------------------------------------------
create view audit.notifications with (security_invoker = false) as
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
    else 'pending'
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
  c.position as client_operation_position
from notification.client_operations c
left join lateral (
  -- The latest event that moves the notification on (the alert comes after the outcome, so it is left out).
  select e.type, e.payload, e.recorded_at,
         e.type in ('SentOnAllPreparedChannelsEvent', 'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent',
                    'CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent', 'CouldNotPrepareToSendOnAnyChannelEvent') as terminal
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

comment on view audit.notifications is
  'One row per notification: what the client asked, and how it ended (outcome event, failed channels and why, internal alert).';
comment on column audit.notifications.tracking_id is 'The tracking id returned to the client.';
comment on column audit.notifications.entity_id is 'The entity to notify. Indexed: filter on it.';
comment on column audit.notifications.subject is 'Subject as the client sent it.';
comment on column audit.notifications.tags is 'The client''s tags (JSON object of name to value).';
comment on column audit.notifications.requested_at is 'When the client''s request was recorded. Indexed: filter on it.';
comment on column audit.notifications.channels_requested is 'Channels the client asked for instead of the entity''s preferences; null: the preferences.';
comment on column audit.notifications.idempotency_key is 'The client''s idempotency key, if it gave one.';
comment on column audit.notifications.status is 'pending (not picked up yet), requested, sending, sent, partially_sent, failed, or not_sent (the entity had no channel to use: opted out of every one, or no contact detail; not a failure).';
comment on column audit.notifications.outcome_type is 'The outcome event (SentOnAllPreparedChannelsEvent, CouldNotGetOrUseAudienceEvent, ...); null while under way.';
comment on column audit.notifications.outcome_at is 'When the outcome was recorded.';
comment on column audit.notifications.timed_out is 'Whether the saga''s deadline decided the outcome (channels without an answer counted as failed).';
comment on column audit.notifications.sent_channels is 'Channels it was delivered on (with delivery: fallback, the one that delivered after the others failed).';
comment on column audit.notifications.failed_channels is 'Channels that failed, or could not be used (skipped), when it has an outcome.';
comment on column audit.notifications.failure_reason is 'Why it failed, per channel ("slack: channel_not_found") or as a whole ("unknown entity ..."), or why it was not sent ("opted out of every channel"); null when sent.';
comment on column audit.notifications.internal_team_alerted is 'Whether the internal team was alerted about this notification''s failure.';
comment on column audit.notifications.alerted_at is 'When the alert was sent on its way.';
comment on column audit.notifications.client_operation_position is 'Position of the request in notification.client_operations.';

-- ---------------------------------------------------------------------------
-- audit.entity_versions: every version of every entity, with its validity.
-- ---------------------------------------------------------------------------
create view audit.entity_versions with (security_invoker = false) as
select
  e.id as entity_id,
  -- Per entity, as the API numbers them; the (id, position) index serves the partition.
  row_number() over (partition by e.id order by e.position) as version,
  e.position,
  e.type as change_type,
  e.type = 'EntityRemovedEvent' as removed,
  e.recorded_at as valid_from,
  lead(e.recorded_at) over (partition by e.id order by e.position) as valid_to,
  e.payload->'entity'->>'kind' as kind,
  e.payload->'entity'->>'name' as name,
  e.payload->'entity'->>'email' as email,
  e.payload->'entity'->>'slack' as slack,
  e.payload->'entity'->'preferences' as preferences,
  array(select jsonb_array_elements_text(e.payload->'entity'->'preferences'->'channels')) as channels,
  array(select jsonb_array_elements_text(e.payload->'entity'->'preferences'->'optedOut')) as opted_out,
  e.payload->'entity'->'preferences'->>'delivery' as delivery,
  array(select jsonb_array_elements_text(e.payload->'changed')) as changed,
  coalesce(e.payload->>'changedBy', e.payload->>'removedBy') as changed_by
from entity.events e;

comment on view audit.entity_versions is
  'Every version of every entity (entity.events) with the interval it was in force: valid_from <= t < valid_to (valid_to null: still current).';
comment on column audit.entity_versions.entity_id is 'The entity''s id. Filter on it (index on entity.events (id, position)).';
comment on column audit.entity_versions.version is 'The entity''s own version number, as the API answers it: 1 for its first record, one more for each change or removal (a re-created entity continues the count).';
comment on column audit.entity_versions.position is 'Position of the change in entity.events; notifications record it as entityVersion (PreparedToSend events).';
comment on column audit.entity_versions.change_type is 'EntityChangedEvent or EntityRemovedEvent.';
comment on column audit.entity_versions.removed is 'This version removes the entity: from valid_from on it does not exist.';
comment on column audit.entity_versions.valid_from is 'When this version took effect.';
comment on column audit.entity_versions.valid_to is 'When the next version took effect; null: still in force.';
comment on column audit.entity_versions.kind is 'user, team or service (null when removed).';
comment on column audit.entity_versions.name is 'Display name.';
comment on column audit.entity_versions.email is 'Email address, if any.';
comment on column audit.entity_versions.slack is 'Slack destination, if any.';
comment on column audit.entity_versions.preferences is 'The channel preferences as stored (JSON).';
comment on column audit.entity_versions.channels is 'Channels wanted, most preferred first.';
comment on column audit.entity_versions.opted_out is 'Channels opted out of (these win even over a client''s explicit channels).';
comment on column audit.entity_versions.delivery is 'all: every wanted channel; first: the first usable one.';
comment on column audit.entity_versions.changed is 'Top-level fields this version changed (all of them for a new entity).';
comment on column audit.entity_versions.changed_by is 'Who made the change (or removed the entity).';

-- ---------------------------------------------------------------------------
-- Views over every declared stream, generated from the registry.
-- ---------------------------------------------------------------------------
create function tidings.refresh_audit_views() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $fn$
declare
  s record;
  sch text;
  tbl text;
  sep text := '';
  records_sql text := '';
  changes_sql text := '';
  failures_sql text := '';
  -- Changes by these actors are the machinery's own; anyone else is a person (an operator).
  machinery text[];
  people_idx regclass;
begin
  select coalesce(array_agg(distinct c.actor order by c.actor), '{}') || array['runner']
    into machinery from tidings.stream_consumers c;

  for s in select name from tidings.streams order by name loop
    sch := split_part(s.name, '.', 1);
    tbl := split_part(s.name, '.', 2);

    records_sql := records_sql || sep || format(
      'select %L::text as stream, r.position, r.id as record_id, r.type as record_type, r.tags,
              r.caused_by_stream, r.caused_by_position, r.recorded_at, r.recorded_by::text as recorded_by
       from %I.%I r', s.name, sch, tbl);

    changes_sql := changes_sql || sep || format(
      'select %L::text as stream, h.position, r.id as record_id, r.type as record_type, h.concern,
              h.from_status::text as from_status, h.to_status::text as to_status, h.action, h.actor, h.reason,
              h.details, h.attempt, h.recorded_at as at, h.recorded_by as database_role, h.entry
       from %I.%I h left join %I.%I r on r.position = h.position',
      s.name, sch, tbl || '__handling_history', sch, tbl);

    failures_sql := failures_sql || sep || format(
      'select %L::text as stream, h.position, r.id as record_id, r.type as record_type, h.concern,
              h.last_error as error, h.attempts, h.updated_at as failed_since, h.last_reason as reason,
              h.last_actor, h.last_details as details, r.recorded_at as record_recorded_at
       from %I.%I h left join %I.%I r on r.position = h.position
       where h.status = ''Failed''',
      s.name, sch, tbl || '__handling', sch, tbl);

    -- Few rows match either predicate, so these partial indexes stay small
    -- and spare the views a scan of every handling row. The people index
    -- names the machinery actors in its predicate; its comment records
    -- which, so it is rebuilt only when that set has changed.
    if to_regclass(format('%I.%I', sch, tbl || '__handling_failed_idx')) is null then
      execute format('create index %I on %I.%I (updated_at) where status = ''Failed''',
        tbl || '__handling_failed_idx', sch, tbl || '__handling');
    end if;
    people_idx := to_regclass(format('%I.%I', sch, tbl || '__handling_history_people_idx'));
    if people_idx is null or obj_description(people_idx, 'pg_class') is distinct from machinery::text then
      execute format('drop index if exists %I.%I', sch, tbl || '__handling_history_people_idx');
      execute format('create index %I on %I.%I (recorded_at) where actor <> all (%L::text[])',
        tbl || '__handling_history_people_idx', sch, tbl || '__handling_history', machinery);
      execute format('comment on index %I.%I is %L', sch, tbl || '__handling_history_people_idx', machinery::text);
    end if;

    sep := E'\nunion all\n';
  end loop;

  execute 'create or replace view audit.records with (security_invoker = false) as ' || records_sql;
  execute 'create or replace view audit.handling_changes with (security_invoker = false) as ' || changes_sql;
  execute 'create or replace view audit.failures_waiting with (security_invoker = false) as ' || failures_sql;
  -- The predicate is written exactly as in the partial indexes, so each
  -- branch of handling_changes can use its index.
  execute format($v$
    create or replace view audit.redrives with (security_invoker = false) as
    select c.at, c.actor, c.action, c.stream, c.position, c.record_id, c.record_type, c.concern,
           c.from_status, c.to_status, c.reason, c.details, c.database_role
    from audit.handling_changes c
    where c.actor <> all (%L::text[])
    union all
    select h.changed_at, h.changed_by, case when h.disabled then 'disable_stream' else 'enable_stream' end,
           h.stream, null, null, null, h.concern, null, null, h.reason, null, null
    from tidings.stream_concern_history h$v$, machinery);

  grant select on audit.records, audit.handling_changes, audit.failures_waiting, audit.redrives to tidings_auditor;
end;
$fn$;

revoke execute on function tidings.refresh_audit_views() from public;
comment on function tidings.refresh_audit_views() is
  'Regenerates the audit views that cover every stream (records, handling_changes, failures_waiting, redrives) from the registry. Call after declaring a stream or a consumer.';

select tidings.refresh_audit_views();

comment on view audit.records is
  'Every record of every declared stream, without its payload: what was written, when, by whom, in reaction to what.';
comment on column audit.records.stream is 'The stream (schema.table).';
comment on column audit.records.position is 'Position within the stream.';
comment on column audit.records.record_id is 'The record id; for anything about a notification, its tracking id; for entity events, the entity id.';
comment on column audit.records.record_type is 'The payload type, e.g. SendEmailOp, SentOnAllPreparedChannelsEvent.';
comment on column audit.records.tags is 'Tags (JSON object).';
comment on column audit.records.caused_by_stream is 'The stream of the record this one reacts to.';
comment on column audit.records.caused_by_position is 'The position of the record this one reacts to.';
comment on column audit.records.recorded_at is 'When it was written (transaction time).';
comment on column audit.records.recorded_by is 'The database role that wrote it (the producer).';

comment on view audit.handling_changes is
  'Every handling change of every record of every stream, for every concern: from, to, action, who, why, when.';
comment on column audit.handling_changes.stream is 'The stream of the record.';
comment on column audit.handling_changes.position is 'The record''s position in its stream.';
comment on column audit.handling_changes.record_id is 'The record''s id (a notification''s tracking id, an entity id).';
comment on column audit.handling_changes.record_type is 'The record''s type.';
comment on column audit.handling_changes.concern is 'Which handling this is about (email_bot, saga_bot, ...).';
comment on column audit.handling_changes.from_status is 'Status before the change.';
comment on column audit.handling_changes.to_status is 'Status after the change.';
comment on column audit.handling_changes.action is 'claim, complete, fail, self_cancel, cancel, reset_failed, archive_failure, reset_completed or disable_for_record.';
comment on column audit.handling_changes.actor is 'Who made it: a bot (email_bot, ...), the runner, or a person''s name.';
comment on column audit.handling_changes.reason is 'Why (required for every change but complete).';
comment on column audit.handling_changes.details is 'Details as JSON (error classification, retry delay, ...).';
comment on column audit.handling_changes.attempt is 'The attempt count after the change.';
comment on column audit.handling_changes.at is 'When.';
comment on column audit.handling_changes.database_role is 'The database session user, and the role it acted as ("app as tidings_email_bot").';
comment on column audit.handling_changes.entry is 'Order of the change within its stream''s history.';

comment on view audit.failures_waiting is
  'Every record whose handling is Failed, per stream and concern: nothing more happens to it until an operator re-drives or archives it.';
comment on column audit.failures_waiting.stream is 'The stream of the record.';
comment on column audit.failures_waiting.position is 'The record''s position.';
comment on column audit.failures_waiting.record_id is 'The record''s id (a notification''s tracking id).';
comment on column audit.failures_waiting.record_type is 'The record''s type.';
comment on column audit.failures_waiting.concern is 'The concern that failed (email_bot, slack_bot, ...).';
comment on column audit.failures_waiting.error is 'The error kept with the failure.';
comment on column audit.failures_waiting.attempts is 'Attempts made.';
comment on column audit.failures_waiting.failed_since is 'When it became Failed.';
comment on column audit.failures_waiting.reason is 'The reason recorded with the failure ("permanent failure on attempt 1: ...").';
comment on column audit.failures_waiting.last_actor is 'Who recorded the failure.';
comment on column audit.failures_waiting.details is 'Details of the failure (classification, SMTP code, Slack error).';
comment on column audit.failures_waiting.record_recorded_at is 'When the record itself was written.';

comment on view audit.redrives is
  'Handling changes made by people (not the bots or the runner): re-drives, cancels, archives, disables; and stream-wide disables and enables.';
comment on column audit.redrives.at is 'When.';
comment on column audit.redrives.actor is 'Who (the name the operator gave).';
comment on column audit.redrives.action is 'The handling action, or disable_stream / enable_stream for a whole stream and concern.';
comment on column audit.redrives.stream is 'The stream.';
comment on column audit.redrives.position is 'The record''s position; null for stream-wide changes.';
comment on column audit.redrives.record_id is 'The record''s id; null for stream-wide changes.';
comment on column audit.redrives.record_type is 'The record''s type; null for stream-wide changes.';
comment on column audit.redrives.concern is 'The concern.';
comment on column audit.redrives.from_status is 'Status before; null for stream-wide changes.';
comment on column audit.redrives.to_status is 'Status after; null for stream-wide changes.';
comment on column audit.redrives.reason is 'Why, as the operator wrote it.';
comment on column audit.redrives.details is 'Details the operator attached.';
comment on column audit.redrives.database_role is 'The database session user and role; null for stream-wide changes.';

-- ---------------------------------------------------------------------------
-- audit.projection_failures: notifications whose view the projection passed
-- over (tidings.checkpoint_failures).
-- ---------------------------------------------------------------------------
create view audit.projection_failures with (security_invoker = false) as
select f.entry, f.checkpoint, f.id as notification_id, f.records, f.error, f.recorded_at as at,
       (c.cursors) as checkpoint_cursors, c.updated_at as checkpoint_moved_at
from tidings.checkpoint_failures f
join tidings.checkpoints c on c.name = f.checkpoint;
comment on view audit.projection_failures is
  'Notifications whose view the projection could not build (passed over; tried again at their next change), with the error.';
grant select on audit.projection_failures to tidings_auditor;
comment on column audit.projection_failures.entry is 'Order of the failures.';
comment on column audit.projection_failures.checkpoint is 'Which catch-up bot passed the records over (notification_views: the projection).';
comment on column audit.projection_failures.notification_id is 'The notification whose view could not be built.';
comment on column audit.projection_failures.records is 'The records of the failed batch for it: [{"stream": ..., "position": ...}].';
comment on column audit.projection_failures.error is 'The error, as the bot raised it.';
comment on column audit.projection_failures.at is 'When it was passed over.';
comment on column audit.projection_failures.checkpoint_cursors is 'Where the bot is now in each stream it follows ("<txid>-<position>").';
comment on column audit.projection_failures.checkpoint_moved_at is 'When the bot last moved on.';

-- ---------------------------------------------------------------------------
-- The auditor: the audit views and nothing else. It already holds read access
-- to the registry (tidings.declare_actor) and no privilege on any stream.
-- ---------------------------------------------------------------------------
grant usage on schema audit to tidings_auditor;
grant select on all tables in schema audit to tidings_auditor;
