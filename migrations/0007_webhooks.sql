-- Status webhooks (docs/webhooks.md): endpoints a client registers, and the
-- signed deliveries of notification status changes to them, built on the
-- stream engine like everything else: a registration is a record, a delivery
-- is a record with handling state (its attempts, its failure, its re-drive).

select tidings.declare_actor('webhook_admin', 'Registers and removes webhook endpoints (the API''s admin scope).');
select tidings.declare_actor('webhook_bot', 'Turns notification status changes into webhook deliveries, delivers them signed (Standard Webhooks), disables an endpoint that keeps failing and alerts the internal team.');

select tidings.declare_stream('webhook.endpoints', 'webhook', 'event', null,
  array['WebhookEndpointRegisteredEvent', 'WebhookEndpointRemovedEvent', 'WebhookEndpointDisabledEvent'],
  'Webhook endpoints (id = endpoint id): registered (url, event types), removed, or disabled after failing deliveries. The signing secret is not in it (webhook.signing_secrets).');
select tidings.declare_stream('webhook.deliveries', 'webhook', 'operation', 'webhook',
  array['DeliverWebhookOp'],
  'One message to one endpoint (id = the notification''s tracking id): the signed body, its webhook-id, the event it reports. Its handling state is the delivery''s: attempts, failure, re-drive.');

-- The endpoint admin writes registrations and removals and reads them back.
select tidings.declare_producer('webhook.endpoints', 'webhook_admin');
select tidings.declare_reader('webhook.endpoints', 'webhook_admin');
-- The bot disables endpoints, writes and consumes deliveries.
select tidings.declare_producer('webhook.endpoints', 'webhook_bot');
select tidings.declare_reader('webhook.endpoints', 'webhook_bot');
select tidings.declare_producer('webhook.deliveries', 'webhook_bot');
select tidings.declare_consumer('webhook.deliveries', 'webhook_bot', 'webhook_bot',
  array['DeliverWebhookOp'], 'Delivers the message to the endpoint, signed.');
-- What it reports: the notification's events and its channels' events.
select tidings.declare_reader('notification.events', 'webhook_bot');
select tidings.declare_reader('email.events', 'webhook_bot');
select tidings.declare_reader('slack.events', 'webhook_bot');
-- The alert when it disables an endpoint is an ordinary channel operation to
-- the internal team (as the notification alerts are), whose outcome no saga awaits.
select tidings.declare_producer('email.operations', 'webhook_bot');
select tidings.declare_producer('slack.operations', 'webhook_bot');

-- Every actor may look names up in schema webhook (USAGE), nothing more:
-- readTrail asks has_table_privilege() of every stream, which fails outright
-- on a schema the role cannot look into. The tables keep their own grants.
do $$
declare
  a record;
begin
  for a in select role_name from tidings.actors loop
    execute format('grant usage on schema webhook to %I', a.role_name);
  end loop;
end;
$$;

-- ---------------------------------------------------------------------------
-- Signing secrets, apart from the stream: whoever may read the endpoints
-- (the admin listing them, an auditor through the views) never reads a
-- secret. The admin writes one once per endpoint and cannot read it back; the
-- bot reads them to sign. Standard Webhooks signs with HMAC-SHA256, so the
-- secret is kept as is (a hash could not sign).
-- ---------------------------------------------------------------------------
create table webhook.signing_secrets (
  endpoint_id text primary key check (endpoint_id ~ '^wh_[A-Za-z0-9]{1,64}$'),
  secret text not null check (secret ~ '^whsec_[A-Za-z0-9+/]{32,128}={0,2}$'),
  recorded_at timestamptz not null default now(),
  recorded_by name not null default current_user
);
comment on table webhook.signing_secrets is
  'Each webhook endpoint''s signing secret (whsec_ + base64), written once at registration; read by the webhook bot alone.';
create trigger refuse_update_delete before update or delete on webhook.signing_secrets
  for each statement execute function tidings.tg_refuse_change();
create trigger refuse_truncate before truncate on webhook.signing_secrets
  for each statement execute function tidings.tg_refuse_change();
revoke all on webhook.signing_secrets from public;
grant insert (endpoint_id, secret) on webhook.signing_secrets to tidings_webhook_admin;
grant select on webhook.signing_secrets to tidings_webhook_bot;

-- ---------------------------------------------------------------------------
-- The dispatcher follows the notification's and its channels' events from a
-- checkpoint (like the projection) and appends a delivery per subscribed
-- endpoint. It starts at the streams' ends: what happened before webhooks
-- existed is nobody's to deliver.
-- ---------------------------------------------------------------------------
insert into tidings.checkpoints (name, actor, description, cursors)
select 'webhook_dispatch', 'webhook_bot',
       'Webhook deliveries, from notification.events, email.events and slack.events.',
       jsonb_build_object(
         'notification.events', coalesce((select feed_key::text || '-' || position from notification.events order by feed_key desc, position desc limit 1), '0-0'),
         'email.events', coalesce((select feed_key::text || '-' || position from email.events order by feed_key desc, position desc limit 1), '0-0'),
         'slack.events', coalesce((select feed_key::text || '-' || position from slack.events order by feed_key desc, position desc limit 1), '0-0'));
grant select, update on tidings.checkpoints to tidings_webhook_bot;
grant select, insert on tidings.checkpoint_failures to tidings_webhook_bot;

-- A delivery waits for the earlier ones of the same notification to the same
-- endpoint (in order per notification), and an endpoint is disabled after
-- its latest deliveries failed: both look deliveries up by endpoint.
create index deliveries_endpoint_idx on webhook.deliveries ((payload->>'endpointId'), id, position);

-- ---------------------------------------------------------------------------
-- Audit views (docs/audit.md): endpoints without their secrets, and each
-- delivery with its handling state ("which webhook deliveries are failing?").
-- ---------------------------------------------------------------------------
create view audit.webhook_endpoints with (security_invoker = false) as
select
  r.id as endpoint_id,
  r.payload->>'url' as url,
  -- null: every event type.
  case when jsonb_typeof(r.payload->'events') = 'array' then array(select jsonb_array_elements_text(r.payload->'events')) end as events,
  case when d.position is not null then 'disabled' when x.position is not null then 'removed' else 'active' end as status,
  r.recorded_at as registered_at,
  r.payload->>'registeredBy' as registered_by,
  coalesce(x.recorded_at, d.recorded_at) as ended_at,
  coalesce(x.payload->>'removedBy', d.payload->>'reason') as ended_because
from webhook.endpoints r
left join lateral (select * from webhook.endpoints e where e.id = r.id and e.type = 'WebhookEndpointRemovedEvent' order by position limit 1) x on true
left join lateral (select * from webhook.endpoints e where e.id = r.id and e.type = 'WebhookEndpointDisabledEvent' order by position limit 1) d on true
where r.type = 'WebhookEndpointRegisteredEvent';
comment on view audit.webhook_endpoints is
  'Every webhook endpoint: its url, the event types it subscribed to, whether it is active, removed or disabled (and why). Signing secrets are not readable here.';

create view audit.webhook_deliveries with (security_invoker = false) as
select
  o.position,
  o.id as notification_id,
  o.payload->>'endpointId' as endpoint_id,
  o.payload->>'url' as url,
  o.payload->>'eventType' as event_type,
  o.payload->>'messageId' as webhook_id,
  coalesce(h.status::text, 'AvailableByDefault') as status,
  coalesce(h.attempts, 0) as attempts,
  h.last_error,
  (h.last_details->'external'->>'httpStatus')::integer as last_http_status,
  h.updated_at as status_since,
  o.caused_by_stream as reported_stream,
  o.caused_by_position as reported_position,
  o.recorded_at
from webhook.deliveries o
left join webhook.deliveries__handling h on h.position = o.position and h.concern = 'webhook_bot';
comment on view audit.webhook_deliveries is
  'Every webhook delivery: which notification event went to which endpoint, its handling status (Completed: delivered; Failed: given up, waiting for an operator), attempts and last error. Each attempt is in audit.handling_changes (stream webhook.deliveries).';

comment on column audit.webhook_endpoints.endpoint_id is 'The endpoint''s id (wh_...), as the API answers it.';
comment on column audit.webhook_endpoints.url is 'Where deliveries are POSTed.';
comment on column audit.webhook_endpoints.events is 'The event types it subscribed to; null: every one.';
comment on column audit.webhook_endpoints.status is 'active, removed (by a client) or disabled (its deliveries kept failing).';
comment on column audit.webhook_endpoints.registered_at is 'When it was registered.';
comment on column audit.webhook_endpoints.registered_by is 'Who registered it (the API key).';
comment on column audit.webhook_endpoints.ended_at is 'When it was removed or disabled; null while active.';
comment on column audit.webhook_endpoints.ended_because is 'Who removed it, or why it was disabled.';
comment on column audit.webhook_deliveries.position is 'Position of the delivery in webhook.deliveries (what npm run redrive names).';
comment on column audit.webhook_deliveries.notification_id is 'The tracking id of the notification whose change it reports.';
comment on column audit.webhook_deliveries.endpoint_id is 'The endpoint it goes to.';
comment on column audit.webhook_deliveries.url is 'The endpoint''s URL when the delivery was made.';
comment on column audit.webhook_deliveries.event_type is 'What it reports: notification.requested, notification.channel.sent, notification.sent...';
comment on column audit.webhook_deliveries.webhook_id is 'Its webhook-id header: the same on every attempt.';
comment on column audit.webhook_deliveries.status is 'Handling status: Completed (delivered), Failed (given up, waiting for an operator), Available* (waiting for its next attempt), Running.';
comment on column audit.webhook_deliveries.attempts is 'Attempts so far (claims, including waits for an earlier delivery of the same notification).';
comment on column audit.webhook_deliveries.last_error is 'The last failure: the HTTP status and answer, or the network error.';
comment on column audit.webhook_deliveries.last_http_status is 'The HTTP status of the last failed attempt, if it got an answer.';
comment on column audit.webhook_deliveries.status_since is 'When the status last changed.';
comment on column audit.webhook_deliveries.reported_stream is 'The stream of the record it reports (notification.events, email.events, slack.events).';
comment on column audit.webhook_deliveries.reported_position is 'The position of the record it reports.';
comment on column audit.webhook_deliveries.recorded_at is 'When the delivery was recorded.';

grant select on audit.webhook_endpoints, audit.webhook_deliveries to tidings_auditor;
-- The views over every stream (records, handling changes, failures) now cover the webhook streams.
select tidings.refresh_audit_views();
