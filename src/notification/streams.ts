import { sql, type RawBuilder } from "kysely";
import { EmailStreams } from "../email/email.streams";
import { EntityStreams } from "../entities/entity.streams";
import { SlackStreams } from "../slack/slack.streams";
import { TemplateStreams } from "../templates/template.schemas";

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
  entityErasures: EntityStreams.erasures,
  templateVersions: TemplateStreams.versions,
} as const;

/**
 * A condition on the records (aliased `s`) of one stream: those about this
 * entity. A record names it (payload.entityId), or belongs to a notification
 * whose client operation names it, or is one of the entity's own events.
 * The re-drive tools select with it; the engine knows nothing of entities.
 */
export function recordsAboutEntity(stream: string, entityId: string): RawBuilder<unknown> {
  return sql`(
    s.payload->>'entityId' = ${entityId}
    or s.id in (select o.id from ${sql.table(Streams.notificationClientOperations)} o where o.payload->>'entityId' = ${entityId})
    ${stream === Streams.entityEvents ? sql`or s.id = ${entityId}` : sql``})`;
}
