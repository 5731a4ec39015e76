-- The streams of tidings, their producers and consumers: the seed's
-- notification subsystem, its email and Slack concern streams, and the
-- entity events that hold contact details and channel preferences.

-- Actors (each one a PostgreSQL role named tidings_<name>, without login).
select tidings.declare_actor('client', 'Clients of the notification subsystem: the HTTP API enqueueing for a caller, or a service enqueueing in SQL.');
select tidings.declare_actor('notification_bot', 'Handles SendNotificationToEntityOp: audience, preferences, channel operations, saga.');
select tidings.declare_actor('saga_bot', 'Follows each notification''s channel operations and writes its one outcome event.');
select tidings.declare_actor('reaction_bot', 'Reacts to failure outcomes on the notification event stream by queueing an internal operation.');
select tidings.declare_actor('internal_operation_bot', 'Executes internal operations: alerts the internal team about failed notifications.');
select tidings.declare_actor('projection_bot', 'Writes UI views and aggregate snapshots after each change of a notification.');
select tidings.declare_actor('email_bot', 'Sends email over SMTP and records the outcome.');
select tidings.declare_actor('slack_bot', 'Posts Slack messages and records the outcome.');
select tidings.declare_actor('entity_admin', 'Records changes of entities: contact details and channel preferences.');
select tidings.declare_actor('reader', 'Reads views, snapshots and events for API clients and UIs; writes nothing.');
select tidings.declare_actor('operator', 'Repairs handling state (re-drive, cancel, archive, disable); never writes a stream.');
select tidings.declare_actor('auditor', 'Answers questions about what happened; reads only what it is granted.');

-- Notification subsystem.
select tidings.declare_stream('notification.client_operations', 'notification', 'client_operation', null,
  'Operations clients asked the notification subsystem to execute (SendNotificationToEntityOp). The record id is the tracking id.');
select tidings.declare_stream('notification.internal_operations', 'notification', 'internal_operation', null,
  'Operations the subsystem queued for itself, e.g. alerting the internal team about a failed notification.');
select tidings.declare_stream('notification.sagas', 'notification', 'saga', null,
  'One saga per notification: the channel operations it waits for and the deadline by which they must have an outcome.');
select tidings.declare_stream('notification.events', 'notification', 'event', null,
  'Events of the notification aggregate; applied in order they rebuild it.');
select tidings.declare_stream('notification.views', 'notification', 'view', null,
  'UI-shaped JSON of a notification after each change, served raw by the API.');
select tidings.declare_stream('notification.snapshots', 'notification', 'snapshot', null,
  'The notification aggregate as of an event position: written at terminal states and every N events.');

-- Email concern.
select tidings.declare_stream('email.operations', 'notification', 'operation', 'email',
  'SendEmailOp: everything needed to compose and deliver one email.');
select tidings.declare_stream('email.events', 'notification', 'event', 'email',
  'What happened to each SendEmailOp: requested, succeeded (server reply) or failed (error, code, classification).');

-- Slack concern.
select tidings.declare_stream('slack.operations', 'notification', 'operation', 'slack',
  'SendSlackMessageOp: everything needed to post one Slack message.');
select tidings.declare_stream('slack.events', 'notification', 'event', 'slack',
  'What happened to each SendSlackMessageOp: requested, succeeded (channel, ts) or failed (error, classification).');

-- Entities.
select tidings.declare_stream('entity.events', 'entity', 'event', null,
  'Changes of an entity (id = entity id): contact details and channel preferences; the current entity is their projection.');

-- Producers: write-only access.
select tidings.declare_producer('notification.client_operations', 'client');
select tidings.declare_producer('notification.internal_operations', 'reaction_bot');
select tidings.declare_producer('notification.sagas', 'notification_bot');
select tidings.declare_producer('notification.events', 'notification_bot');
select tidings.declare_producer('notification.events', 'saga_bot');
select tidings.declare_producer('notification.events', 'internal_operation_bot');
select tidings.declare_producer('notification.views', 'projection_bot');
select tidings.declare_producer('notification.snapshots', 'projection_bot');
select tidings.declare_producer('email.operations', 'notification_bot');
select tidings.declare_producer('email.operations', 'internal_operation_bot');
select tidings.declare_producer('email.events', 'email_bot');
select tidings.declare_producer('slack.operations', 'notification_bot');
select tidings.declare_producer('slack.operations', 'internal_operation_bot');
select tidings.declare_producer('slack.events', 'slack_bot');
select tidings.declare_producer('entity.events', 'entity_admin');

-- Consumers: read-only access to the stream, read-write to its handling state.
select tidings.declare_consumer('notification.client_operations', 'notification_bot', 'notification_bot',
  array['SendNotificationToEntityOp'], 'Executes the client operation.');
select tidings.declare_consumer('notification.internal_operations', 'internal_operation_bot', 'internal_operation_bot',
  null, 'Executes internal operations.');
select tidings.declare_consumer('notification.sagas', 'saga_bot', 'saga_bot',
  null, 'Enforces the saga deadline.');
select tidings.declare_consumer('notification.events', 'reaction_bot', 'reaction_bot',
  array['CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent', 'CouldNotPrepareToSendOnAnyChannelEvent',
        'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent'],
  'Alerts the internal team about failure outcomes.');
select tidings.declare_consumer('notification.events', 'projection_bot', 'projection_bot',
  null, 'Writes the view and, when due, the snapshot.');
select tidings.declare_consumer('email.operations', 'email_bot', 'email_bot',
  array['SendEmailOp'], 'Sends the email.');
select tidings.declare_consumer('email.events', 'saga_bot', 'saga_bot',
  array['SucceededInSendingEmailEvent', 'FailedToSendEmailEvent'], 'Advances the saga waiting for this email.');
select tidings.declare_consumer('email.events', 'projection_bot', 'projection_bot',
  null, 'Refreshes the view of the notification this email belongs to.');
select tidings.declare_consumer('slack.operations', 'slack_bot', 'slack_bot',
  array['SendSlackMessageOp'], 'Posts the Slack message.');
select tidings.declare_consumer('slack.events', 'saga_bot', 'saga_bot',
  array['SucceededInSendingSlackMessageEvent', 'FailedToSendSlackMessageEvent'], 'Advances the saga waiting for this message.');
select tidings.declare_consumer('slack.events', 'projection_bot', 'projection_bot',
  null, 'Refreshes the view of the notification this message belongs to.');

-- Readers that are not handlers.
select tidings.declare_reader('entity.events', 'notification_bot');
select tidings.declare_reader('entity.events', 'reader');
select tidings.declare_reader('notification.events', 'saga_bot');
select tidings.declare_reader('notification.sagas', 'projection_bot');
select tidings.declare_reader('notification.snapshots', 'projection_bot');
select tidings.declare_reader('notification.views', 'projection_bot');
select tidings.declare_reader('email.operations', 'projection_bot');
select tidings.declare_reader('slack.operations', 'projection_bot');
select tidings.declare_reader('notification.client_operations', 'projection_bot');
select tidings.declare_reader('email.operations', 'saga_bot');
select tidings.declare_reader('slack.operations', 'saga_bot');
select tidings.declare_reader('notification.events', 'internal_operation_bot');
select tidings.declare_reader('notification.views', 'reader');
select tidings.declare_reader('notification.snapshots', 'reader');
select tidings.declare_reader('notification.events', 'reader');

-- The operator repairs handling state on every stream (never the stream
-- itself) and switches streams on and off for a concern.
do $$
declare s record;
begin
  for s in select name from tidings.streams loop
    perform tidings.declare_reader(s.name, 'operator');
    execute format('grant select, insert, update on %s to tidings_operator', s.name || '__handling');
    execute format('grant select on %s to tidings_operator', s.name || '__handling_history');
  end loop;
end $$;
grant insert, update on tidings.stream_concern_states to tidings_operator;
grant insert on tidings.stream_concern_history to tidings_operator;
grant select on tidings.stream_concern_history to tidings_operator;
grant execute on function tidings.queue_handling(text, text, bigint[], timestamptz) to tidings_operator;
