-- The notification subsystem on the stream engine: its actors, its streams
-- (the seed's client operation, internal operation, saga, event, view and
-- snapshot streams, the email and Slack concern streams, and the entity
-- events that hold contact details and channel preferences), who produces
-- and consumes each, and the projection's checkpoint. Enqueueing in SQL is
-- one of the interfaces, in 0003_api_and_audit.sql.

-- Actors (each one a PostgreSQL role named tidings_<name>, without login).
-- Streams declare the types of record they hold: the database refuses any other.
select tidings.declare_actor('client', 'Clients of the notification subsystem: the HTTP API enqueueing for a caller, or a service enqueueing in SQL.');
select tidings.declare_actor('notification_bot', 'Handles SendNotificationToEntityOp: audience, preferences, channel operations, saga.');
select tidings.declare_actor('saga_bot', 'Follows each notification''s channel operations and writes its one outcome event.');
select tidings.declare_actor('reaction_bot', 'Reacts to failure outcomes on the notification event stream by queueing an internal operation.');
select tidings.declare_actor('internal_operation_bot', 'Executes internal operations: alerts the internal team about failed notifications; prepares an operator''s resend from the entity as it is now.');
select tidings.declare_actor('projection_bot', 'Writes UI views and aggregate snapshots after each change of a notification (follows its streams from a checkpoint).');
select tidings.declare_actor('email_bot', 'Sends email over SMTP and records the outcome.');
select tidings.declare_actor('slack_bot', 'Posts Slack messages and records the outcome.');
select tidings.declare_actor('entity_admin', 'Records changes of entities: contact details and channel preferences.');
select tidings.declare_actor('reader', 'Reads views, snapshots and events for API clients and UIs; writes nothing.');
select tidings.declare_actor('operator', 'Repairs handling state (re-drive, cancel, archive, disable); writes no stream but its own requests (ResendNotificationOp).');
select tidings.declare_actor('auditor', 'Answers questions about what happened; reads only what it is granted.');

-- Notification subsystem.
select tidings.declare_stream('notification.client_operations', 'notification', 'client_operation', null,
  array['SendNotificationToEntityOp'],
  'Operations clients asked the notification subsystem to execute (SendNotificationToEntityOp). The record id is the tracking id.');
select tidings.declare_stream('notification.internal_operations', 'notification', 'internal_operation', null,
  array['AlertInternalTeamOp', 'ResendNotificationOp'],
  'Operations the subsystem queued for itself (alerting the internal team about a failed notification) or an operator asked of it (resending failed channels from the entity as it is now).');
select tidings.declare_stream('notification.sagas', 'notification', 'saga', null,
  array['NotificationSaga', 'NotificationDelayWatch'],
  'One saga per notification: the channel operations it waits for and the deadline by which they must have an outcome.');
select tidings.declare_stream('notification.events', 'notification', 'event', null,
  array['SendNotificationRequestedEvent', 'CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent',
        'CouldNotPrepareToSendOnAnyChannelEvent', 'PreparedToSendOnAllChannelsEvent', 'PreparedToSendOnSomeChannelsEvent',
        'SentOnAllPreparedChannelsEvent', 'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent',
        'FailedNotificationSentToInternalTeamEvent', 'FellBackToNextChannelEvent', 'NotificationDelayedEvent',
        'ResendRequestedEvent'],
  'Events of the notification aggregate; applied in order they rebuild it.');
select tidings.declare_stream('notification.views', 'notification', 'view', null,
  array['NotificationView'],
  'UI-shaped JSON of a notification after each change, served raw by the API.');
select tidings.declare_stream('notification.snapshots', 'notification', 'snapshot', null,
  array['NotificationSnapshot'],
  'The notification aggregate as of an event position: written at terminal states and every N events.');

-- One client operation per tracking id: a client appending under an id that
-- is taken (by chance or on purpose) is refused, never merged into another's.
create unique index client_operations_one_per_id on notification.client_operations (id);

-- Email concern.
select tidings.declare_stream('email.operations', 'notification', 'operation', 'email',
  array['SendEmailOp'],
  'SendEmailOp: everything needed to compose and deliver one email.');
select tidings.declare_stream('email.events', 'notification', 'event', 'email',
  array['SendEmailRequestedEvent', 'SendEmailAttemptFailedEvent', 'SucceededInSendingEmailEvent', 'FailedToSendEmailEvent'],
  'What happened to each SendEmailOp: requested (each attempt), an attempt failed (retried later), succeeded (server reply) or failed for good (error, code, classification).');

-- Slack concern.
select tidings.declare_stream('slack.operations', 'notification', 'operation', 'slack',
  array['SendSlackMessageOp'],
  'SendSlackMessageOp: everything needed to post one Slack message.');
select tidings.declare_stream('slack.events', 'notification', 'event', 'slack',
  array['SendSlackMessageRequestedEvent', 'SendSlackMessageAttemptFailedEvent', 'SucceededInSendingSlackMessageEvent', 'FailedToSendSlackMessageEvent'],
  'What happened to each SendSlackMessageOp: requested, succeeded (channel, ts) or failed (error, classification).');

-- Entities.
select tidings.declare_stream('entity.events', 'entity', 'event', null,
  array['EntityChangedEvent', 'EntityRemovedEvent'],
  'Changes of an entity (id = entity id): contact details and channel preferences; the current entity is their projection.');

-- Producers: write-only access.
select tidings.declare_producer('notification.client_operations', 'client');
select tidings.declare_producer('notification.internal_operations', 'reaction_bot');
-- An operator's resend is a record (ResendNotificationOp, with who and why),
-- never a channel operation written by hand: internal_operation_bot prepares it.
select tidings.declare_producer('notification.internal_operations', 'operator');
select tidings.declare_producer('notification.sagas', 'notification_bot');
select tidings.declare_producer('notification.events', 'notification_bot');
select tidings.declare_producer('notification.events', 'saga_bot');
select tidings.declare_producer('notification.events', 'internal_operation_bot');
select tidings.declare_producer('notification.views', 'projection_bot');
select tidings.declare_producer('notification.snapshots', 'projection_bot');
select tidings.declare_producer('email.operations', 'notification_bot');
select tidings.declare_producer('email.operations', 'internal_operation_bot');
-- The saga falls back to the next channel (delivery: fallback): it appends
-- the operation prepared for it, and the saga awaiting it.
select tidings.declare_producer('email.operations', 'saga_bot');
select tidings.declare_producer('slack.operations', 'saga_bot');
select tidings.declare_producer('notification.sagas', 'saga_bot');
select tidings.declare_producer('email.events', 'email_bot');
select tidings.declare_producer('slack.operations', 'notification_bot');
select tidings.declare_producer('slack.operations', 'internal_operation_bot');
-- A resend's new channel operations come with a saga awaiting them.
select tidings.declare_producer('notification.sagas', 'internal_operation_bot');
select tidings.declare_producer('slack.events', 'slack_bot');
select tidings.declare_producer('entity.events', 'entity_admin');

-- Consumers: read-only access to the stream, read-write to its handling state.
select tidings.declare_consumer('notification.client_operations', 'notification_bot', 'notification_bot',
  array['SendNotificationToEntityOp'], 'Executes the client operation.');
select tidings.declare_consumer('notification.internal_operations', 'internal_operation_bot', 'internal_operation_bot',
  null, 'Executes internal operations.');
select tidings.declare_consumer('notification.sagas', 'saga_bot', 'saga_bot',
  null, 'Enforces the saga deadline (runs at the deadline).', 'deadline');
select tidings.declare_consumer('notification.events', 'reaction_bot', 'reaction_bot',
  array['CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent', 'CouldNotPrepareToSendOnAnyChannelEvent',
        'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent', 'NotificationDelayedEvent'],
  'Alerts the internal team about failure outcomes (and delays, and notifications not sent when configured).');
select tidings.declare_consumer('email.operations', 'email_bot', 'email_bot',
  array['SendEmailOp'], 'Sends the email.');
select tidings.declare_consumer('email.events', 'saga_bot', 'saga_bot',
  array['SucceededInSendingEmailEvent', 'FailedToSendEmailEvent'], 'Advances the saga waiting for this email.');
select tidings.declare_consumer('slack.operations', 'slack_bot', 'slack_bot',
  array['SendSlackMessageOp'], 'Posts the Slack message.');
select tidings.declare_consumer('slack.events', 'saga_bot', 'saga_bot',
  array['SucceededInSendingSlackMessageEvent', 'FailedToSendSlackMessageEvent'], 'Advances the saga waiting for this message.');

-- Readers that are not handlers. The projection follows notification.events,
-- email.events and slack.events from its checkpoint (below) and reads what a
-- view shows from the other streams, including the channel operations'
-- handling state (a send being retried shows its attempts and last error).
select tidings.declare_reader('notification.events', 'projection_bot');
select tidings.declare_reader('email.events', 'projection_bot');
select tidings.declare_reader('slack.events', 'projection_bot');
select tidings.declare_reader('entity.events', 'notification_bot');
select tidings.declare_reader('entity.events', 'reader');
select tidings.declare_reader('notification.events', 'saga_bot');
select tidings.declare_reader('notification.sagas', 'projection_bot');
select tidings.declare_reader('notification.snapshots', 'projection_bot');
select tidings.declare_reader('notification.views', 'projection_bot');
select tidings.declare_reader('email.operations', 'projection_bot', true);
select tidings.declare_reader('slack.operations', 'projection_bot', true);
select tidings.declare_reader('notification.client_operations', 'projection_bot');
select tidings.declare_reader('email.operations', 'saga_bot');
select tidings.declare_reader('slack.operations', 'saga_bot');
select tidings.declare_reader('notification.events', 'internal_operation_bot');
-- A resend is prepared from the entity as it is now and the client's message as it was.
select tidings.declare_reader('entity.events', 'internal_operation_bot');
select tidings.declare_reader('notification.client_operations', 'internal_operation_bot');
select tidings.declare_reader('notification.views', 'reader');
select tidings.declare_reader('notification.snapshots', 'reader');
select tidings.declare_reader('notification.events', 'reader');
-- The entity admin compares a change with the entity's current version.
select tidings.declare_reader('entity.events', 'entity_admin');

-- The operator repairs handling state on every stream, of any concern
-- (never the stream itself), and switches streams on and off for a concern.
select tidings.declare_handling_repairer('operator');

-- ---------------------------------------------------------------------------
-- Channels, and the one answer to "did this send succeed?".
--
-- notification.channels lists the channels as src/notification/channels.ts
-- registers them (a test compares the two): each one's streams and the two
-- event types that end an attempt. notification.operation_outcomes is
-- generated from it: per channel operation that has one, its outcome, by the
-- saga's rule: the latest attempt with an outcome event counts (an operator's
-- re-drive makes a later attempt), and within it a failure wins. The saga
-- decides with it, the projection shows it and the audit views report it, so
-- the three cannot disagree about a send.
-- ---------------------------------------------------------------------------
create table notification.channels (
  name text primary key,
  operations_stream text not null references tidings.streams (name),
  events_stream text not null references tidings.streams (name),
  succeeded_type text not null,
  failed_type text not null
);
comment on table notification.channels is
  'The channels notifications go out on: streams and outcome event types (src/notification/channels.ts registers the same).';
insert into notification.channels values
  ('email', 'email.operations', 'email.events', 'SucceededInSendingEmailEvent', 'FailedToSendEmailEvent'),
  ('slack', 'slack.operations', 'slack.events', 'SucceededInSendingSlackMessageEvent', 'FailedToSendSlackMessageEvent');

create function notification.refresh_operation_outcomes() returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  branches text;
begin
  select string_agg(format($b$
      select %L::text as channel, e.id, e.payload->>'operationId' as operation_id, (e.payload->>'attempt')::integer as attempt,
             case when e.type = %L then 'succeeded' else 'failed' end as outcome,
             e.payload->>'error' as error, %L::text as stream, e.position, e.recorded_at, e.payload
      from %s e where e.type in (%L, %L)$b$,
      c.name, c.succeeded_type, c.events_stream, tidings.stream_table(c.events_stream), c.succeeded_type, c.failed_type),
    ' union all ' order by c.name)
  into branches
  from notification.channels c;
  -- Filters on channel, id or operation_id reach each branch's (id, position) index.
  execute 'create or replace view notification.operation_outcomes as
    select distinct on (channel, id, operation_id) channel, id, operation_id, attempt, outcome, error, stream, position, recorded_at, payload
    from (' || branches || ') o
    order by channel, id, operation_id, attempt desc, (outcome = ''failed'') desc, position desc';
end;
$$;
-- Migrations only (a new channel's).
revoke execute on function notification.refresh_operation_outcomes() from public;
select notification.refresh_operation_outcomes();
comment on view notification.operation_outcomes is
  'Each channel operation''s outcome: from its latest attempt with an outcome event, a failure winning within an attempt (the saga''s rule).';
grant select on notification.operation_outcomes to tidings_saga_bot, tidings_projection_bot;

-- ---------------------------------------------------------------------------
-- The projection: views and snapshots of notifications, built from
-- notification.events, email.events and slack.events past its checkpoint
-- (src/notification/projection.bot.ts). A notification it cannot build is
-- passed over and recorded in tidings.checkpoint_failures.
-- ---------------------------------------------------------------------------
insert into tidings.checkpoints (name, actor, description)
values ('notification_views', 'projection_bot',
        'Views and snapshots of notifications, from notification.events, email.events and slack.events.');
grant select, update on tidings.checkpoints to tidings_projection_bot;
grant select on tidings.checkpoints to tidings_reader;
grant select, insert on tidings.checkpoint_failures to tidings_projection_bot;
grant select on tidings.checkpoint_failures to tidings_reader;
