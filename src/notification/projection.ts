import { sql } from "kysely";
import type { Executor } from "../db/database";
import { SucceededInSendingEmailEvent } from "../email/email.schemas";
import { SucceededInSendingSlackMessageEvent } from "../slack/slack.schemas";
import { Streams } from "../streams/names";
import { findRecords, getLatestById } from "../streams/read";
import { NotificationAggregate, foldEvents } from "./aggregate";
import { NotificationRecordTypes } from "./notification.schemas";

export interface NotificationSnapshot {
  aggregate: NotificationAggregate;
  /** Position in notification.events of the last event folded in. */
  asOfPosition: number;
}

/**
 * The notification aggregate as of now, or as of an event position or a time:
 * the nearest snapshot at or before that point plus the events after it.
 */
export async function loadNotification(
  db: Executor,
  id: string,
  asOf: { position?: number; time?: Date } = {},
): Promise<{ aggregate: NotificationAggregate | null; snapshot: NotificationSnapshot | null; eventsApplied: number }> {
  const bound = asOf.position ?? Number.MAX_SAFE_INTEGER;
  const { rows } = await sql<{ payload: { aggregate: unknown; asOfPosition: number } }>`
    select payload from notification.snapshots
    where id = ${id} and type = ${NotificationRecordTypes.NotificationSnapshot}
      and (payload->>'asOfPosition')::bigint <= ${bound}
      ${asOf.time ? sql`and (payload->'aggregate'->>'updatedAt')::timestamptz <= ${asOf.time}` : sql``}
    order by (payload->>'asOfPosition')::bigint desc limit 1`.execute(db);
  const snapshot = rows[0]
    ? { aggregate: NotificationAggregate.parse(rows[0].payload.aggregate), asOfPosition: rows[0].payload.asOfPosition }
    : null;
  const events = (
    await findRecords(db, Streams.notificationEvents, { ids: [id], afterPosition: snapshot?.asOfPosition ?? 0 })
  ).filter((e) => e.position <= bound && (!asOf.time || e.recordedAt <= asOf.time));
  return {
    aggregate: foldEvents(snapshot?.aggregate ?? null, events),
    snapshot,
    eventsApplied: events.length,
  };
}

export interface ChannelView {
  channel: "email" | "slack";
  destination: string;
  status: "pending" | "sending" | "sent" | "failed";
  attempts: number;
  lastError: string | null;
  sentAt: string | null;
  messageId?: string;
  ts?: string;
}

/** The UI view: the aggregate plus each channel's live progress (attempts, last error). */
export async function buildView(db: Executor, aggregate: NotificationAggregate) {
  const channels: ChannelView[] = [];
  for (const c of aggregate.channels) {
    const opStream = c.channel === "email" ? Streams.emailOperations : Streams.slackOperations;
    const eventStream = c.channel === "email" ? Streams.emailEvents : Streams.slackEvents;
    const events = (await findRecords(db, eventStream, { ids: [aggregate.id] })).filter(
      (e) => (e.payload as { operationId?: string }).operationId === c.operationId,
    );
    const { rows } = await sql<{ attempts: number | null; last_error: string | null; status: string | null }>`
      select h.attempts, h.last_error, h.status::text as status
      from ${sql.table(opStream)} o
      left join ${sql.table(`${opStream}__handling`)} h on h.position = o.position
      where o.id = ${aggregate.id} and o.payload->>'operationId' = ${c.operationId}
      order by o.position desc limit 1`.execute(db);
    const handling = rows[0];
    // The latest attempt's outcome counts (an operator may have re-driven a failed send).
    const outcomes = events.filter((e) => e.type.startsWith("SucceededIn") || e.type.startsWith("FailedTo"));
    const latest = outcomes.at(-1);
    const success = latest?.type.startsWith("SucceededIn") ? latest : undefined;
    const failure = latest?.type.startsWith("FailedTo") ? latest : undefined;
    const status: ChannelView["status"] =
      c.outcome === "succeeded" || success
        ? "sent"
        : c.outcome === "failed" || failure
          ? "failed"
          : handling?.status
            ? "sending"
            : "pending";
    const view: ChannelView = {
      channel: c.channel,
      destination: c.destination,
      status,
      attempts: handling?.attempts ?? events.filter((e) => e.type.endsWith("RequestedEvent")).length,
      lastError: status === "sent" ? null : (c.error ?? handling?.last_error ?? null),
      sentAt: success ? success.recordedAt.toISOString() : null,
    };
    if (success && c.channel === "email") view.messageId = SucceededInSendingEmailEvent.parse(success.payload).messageId;
    if (success && c.channel === "slack") view.ts = SucceededInSendingSlackMessageEvent.parse(success.payload).ts;
    channels.push(view);
  }
  return {
    id: aggregate.id,
    status: aggregate.status,
    entity: { id: aggregate.entityId, name: aggregate.entityName },
    subject: aggregate.subject,
    tags: aggregate.tags,
    requestedAt: aggregate.requestedAt,
    updatedAt: aggregate.updatedAt,
    outcome: aggregate.outcome,
    failureReason: aggregate.failureReason,
    channels,
    skipped: aggregate.skipped,
    alert: aggregate.alert,
    version: aggregate.lastPosition,
  };
}
export type NotificationView = Awaited<ReturnType<typeof buildView>>;

/** The latest view, as stored (the API serves it raw). */
export async function latestViewJson(db: Executor, id: string): Promise<string | null> {
  const { rows } = await sql<{ payload: string }>`
    select payload::text as payload from notification.views where id = ${id} order by position desc limit 1`.execute(db);
  return rows[0]?.payload ?? null;
}

export { getLatestById };
