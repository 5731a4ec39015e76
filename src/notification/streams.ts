import { EmailStreams } from "../email/email.streams";
import { EntityStreams } from "../entities/entity.streams";
import { SlackStreams } from "../slack/slack.streams";

/**
 * Every stream the notification subsystem declares (migrations/0002_notification.sql;
 * a test checks this list against `tidings.streams`). The engine (src/streams)
 * knows none of them: each subsystem owns its names, and this is where they meet.
 */
export const Streams = {
  notificationClientOperations: "notification.client_operations",
  notificationInternalOperations: "notification.internal_operations",
  notificationSagas: "notification.sagas",
  notificationEvents: "notification.events",
  notificationViews: "notification.views",
  notificationSnapshots: "notification.snapshots",
  emailOperations: EmailStreams.operations,
  emailEvents: EmailStreams.events,
  slackOperations: SlackStreams.operations,
  slackEvents: SlackStreams.events,
  entityEvents: EntityStreams.events,
} as const;
