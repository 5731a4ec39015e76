-- The notification subsystem on the stream engine: its actors, its streams
-- (the seed's client operation, internal operation, saga, event, view and
-- snapshot streams, the email and Slack concern streams, and the entity
-- events that hold contact details and channel preferences), who produces
-- and consumes each, the projection's checkpoint, and the SQL enqueue
-- function for services that share the database.

-- Actors (each one a PostgreSQL role named tidings_<name>, without login).
-- Streams declare the types of record they hold: the database refuses any other.
select tidings.declare_actor('client', 'Clients of the notification subsystem: the HTTP API enqueueing for a caller, or a service enqueueing in SQL.');
select tidings.declare_actor('notification_bot', 'Handles SendNotificationToEntityOp: audience, preferences, channel operations, saga.');
select tidings.declare_actor('saga_bot', 'Follows each notification''s channel operations and writes its one outcome event.');
select tidings.declare_actor('reaction_bot', 'Reacts to failure outcomes on the notification event stream by queueing an internal operation.');
select tidings.declare_actor('internal_operation_bot', 'Executes internal operations: alerts the internal team about failed notifications.');
select tidings.declare_actor('projection_bot', 'Writes UI views and aggregate snapshots after each change of a notification (follows its streams from a checkpoint).');
select tidings.declare_actor('email_bot', 'Sends email over SMTP and records the outcome.');
select tidings.declare_actor('slack_bot', 'Posts Slack messages and records the outcome.');
select tidings.declare_actor('entity_admin', 'Records changes of entities: contact details and channel preferences.');
select tidings.declare_actor('reader', 'Reads views, snapshots and events for API clients and UIs; writes nothing.');
select tidings.declare_actor('operator', 'Repairs handling state (re-drive, cancel, archive, disable); never writes a stream.');
select tidings.declare_actor('auditor', 'Answers questions about what happened; reads only what it is granted.');

-- Notification subsystem.
select tidings.declare_stream('notification.client_operations', 'notification', 'client_operation', null,
  array['SendNotificationToEntityOp'],
  'Operations clients asked the notification subsystem to execute (SendNotificationToEntityOp). The record id is the tracking id.');
select tidings.declare_stream('notification.internal_operations', 'notification', 'internal_operation', null,
  array['AlertInternalTeamOp'],
  'Operations the subsystem queued for itself, e.g. alerting the internal team about a failed notification.');
select tidings.declare_stream('notification.sagas', 'notification', 'saga', null,
  array['NotificationSaga'],
  'One saga per notification: the channel operations it waits for and the deadline by which they must have an outcome.');
select tidings.declare_stream('notification.events', 'notification', 'event', null,
  array['SendNotificationRequestedEvent', 'CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent',
        'CouldNotPrepareToSendOnAnyChannelEvent', 'PreparedToSendOnAllChannelsEvent', 'PreparedToSendOnSomeChannelsEvent',
        'SentOnAllPreparedChannelsEvent', 'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent',
        'FailedNotificationSentToInternalTeamEvent'],
  'Events of the notification aggregate; applied in order they rebuild it.');
select tidings.declare_stream('notification.views', 'notification', 'view', null,
  array['NotificationView'],
  'UI-shaped JSON of a notification after each change, served raw by the API.');
select tidings.declare_stream('notification.snapshots', 'notification', 'snapshot', null,
  array['NotificationSnapshot'],
  'The notification aggregate as of an event position: written at terminal states and every N events.');

-- Email concern.
select tidings.declare_stream('email.operations', 'notification', 'operation', 'email',
  array['SendEmailOp'],
  'SendEmailOp: everything needed to compose and deliver one email.');
select tidings.declare_stream('email.events', 'notification', 'event', 'email',
  array['SendEmailRequestedEvent', 'SucceededInSendingEmailEvent', 'FailedToSendEmailEvent'],
  'What happened to each SendEmailOp: requested, succeeded (server reply) or failed (error, code, classification).');

-- Slack concern.
select tidings.declare_stream('slack.operations', 'notification', 'operation', 'slack',
  array['SendSlackMessageOp'],
  'SendSlackMessageOp: everything needed to post one Slack message.');
select tidings.declare_stream('slack.events', 'notification', 'event', 'slack',
  array['SendSlackMessageRequestedEvent', 'SucceededInSendingSlackMessageEvent', 'FailedToSendSlackMessageEvent'],
  'What happened to each SendSlackMessageOp: requested, succeeded (channel, ts) or failed (error, classification).');

-- Entities.
select tidings.declare_stream('entity.events', 'entity', 'event', null,
  array['EntityChangedEvent', 'EntityRemovedEvent'],
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
  null, 'Enforces the saga deadline (runs at the deadline).', 'deadline');
select tidings.declare_consumer('notification.events', 'reaction_bot', 'reaction_bot',
  array['CouldNotGetOrUseAudienceEvent', 'AudienceOptedOutOfAllChannelsEvent', 'CouldNotPrepareToSendOnAnyChannelEvent',
        'SentOnSomePreparedChannelsEvent', 'CouldNotSendOnAnyPreparedChannelEvent'],
  'Alerts the internal team about failure outcomes.');
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
select tidings.declare_reader('notification.views', 'reader');
select tidings.declare_reader('notification.snapshots', 'reader');
select tidings.declare_reader('notification.events', 'reader');
-- The entity admin compares a change with the entity's current version.
select tidings.declare_reader('entity.events', 'entity_admin');

-- The operator repairs handling state on every stream, of any concern
-- (never the stream itself), and switches streams on and off for a concern.
select tidings.declare_handling_repairer('operator');

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

-- ---------------------------------------------------------------------------
-- Enqueue a notification from SQL, inside the caller's own transaction: a
-- service in any language that shares the database can record its business
-- change and the notification about it atomically. The notification exists
-- if and only if the caller commits.
--
--   select tidings.send_notification_to_entity('ada', 'Your report is ready', 'Hello.');
--
-- Checks mirror SendNotificationToEntityOp (src/notification/notification.schemas.ts)
-- so what this function accepts, the notification bot accepts too.
create function tidings.send_notification_to_entity(
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
  digest bytea;
  hex text;
  trimmed_subject text := btrim(subject);
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

  if idempotency_key is null then
    tracking_id := gen_random_uuid()::text;
  else
    -- The same name-based UUID as trackingIdForIdempotencyKey in src/notification/ids.ts.
    digest := sha256(convert_to('tidings idempotency ' || idempotency_key, 'UTF8'));
    digest := set_byte(digest, 6, (get_byte(digest, 6) & 15) | 80);
    digest := set_byte(digest, 8, (get_byte(digest, 8) & 63) | 128);
    hex := encode(substring(digest from 1 for 16), 'hex');
    tracking_id := substr(hex, 1, 8) || '-' || substr(hex, 9, 4) || '-' || substr(hex, 13, 4) || '-'
                   || substr(hex, 17, 4) || '-' || substr(hex, 21, 12);
  end if;

  perform tidings.append(
    'notification.client_operations',
    jsonb_build_array(jsonb_build_object(
      'id', tracking_id,
      'type', 'SendNotificationToEntityOp',
      'tags', tags,
      'payload', jsonb_strip_nulls(jsonb_build_object(
        'entityId', entity_id,
        'subject', trimmed_subject,
        'text', text_body,
        'html', html_body,
        'markdown', markdown_body,
        'channels', to_jsonb(channels),
        'tags', tags,
        'idempotencyKey', idempotency_key)))),
    case when idempotency_key is null then 'write_always' else 'skip_if_id_and_type_exists' end);
  return tracking_id;
end;
$$;

comment on function tidings.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) is
  'Enqueue SendNotificationToEntityOp in the caller''s transaction; returns the tracking id. Callers need the tidings_client role.';

-- Only clients: a service's login role gets `grant tidings_client to <role>`.
revoke execute on function tidings.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) from public;
grant execute on function tidings.send_notification_to_entity(text, text, text, text, text, text[], jsonb, text) to tidings_client;
