import { sql } from "kysely";
import type { Executor } from "../db/database";
import type { Channel } from "../entities/entity.schemas";
import { allChannels, channelOf, channelOfStream } from "./channels";
import { readOperationOutcomes } from "./outcomes";
import { Streams } from "./streams";
import { readTrail } from "../streams/trail";
import type { StreamRecord } from "../streams/interfaces";
import { findRecords } from "../streams/read";
import { NotificationAggregate, foldEvents } from "./aggregate";
import { NotificationRecordTypes } from "./notification.schemas";
import { SETTLED_STATUSES as SETTLED } from "../streams/transitions";

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
  const snapshot = rows[0] ? { aggregate: NotificationAggregate.parse(rows[0].payload.aggregate), asOfPosition: rows[0].payload.asOfPosition } : null;
  const events = (await findRecords(db, Streams.notificationEvents, { ids: [id], afterPosition: snapshot?.asOfPosition ?? 0 })).filter(
    (e) => e.position <= bound && (!asOf.time || e.recordedAt <= asOf.time),
  );
  return {
    aggregate: foldEvents(snapshot?.aggregate ?? null, events),
    snapshot,
    eventsApplied: events.length,
  };
}

/**
 * The current aggregates of several notifications, in three queries: each
 * one's latest snapshot, then the events after it. Ids with no events are
 * left out (not notifications).
 */
export async function loadLatestNotifications(
  db: Executor,
  ids: readonly string[],
): Promise<Map<string, { aggregate: NotificationAggregate; snapshot: NotificationSnapshot | null }>> {
  const { rows } = await sql<{ id: string; payload: { aggregate: unknown; asOfPosition: number } }>`
    select distinct on (id) id, payload from notification.snapshots
    where id = any(${[...ids]}::text[]) and type = ${NotificationRecordTypes.NotificationSnapshot}
    order by id, (payload->>'asOfPosition')::bigint desc`.execute(db);
  const snapshots = new Map<string, NotificationSnapshot>(
    rows.map((r) => [r.id, { aggregate: NotificationAggregate.parse(r.payload.aggregate), asOfPosition: r.payload.asOfPosition }]),
  );
  const events = new Map<string, StreamRecord[]>();
  for (const e of await findRecords(db, Streams.notificationEvents, { ids, limit: null })) {
    if (e.position > (snapshots.get(e.id)?.asOfPosition ?? 0)) events.set(e.id, [...(events.get(e.id) ?? []), e]);
  }
  const result = new Map<string, { aggregate: NotificationAggregate; snapshot: NotificationSnapshot | null }>();
  for (const id of ids) {
    const snapshot = snapshots.get(id) ?? null;
    const aggregate = foldEvents(snapshot?.aggregate ?? null, events.get(id) ?? []);
    if (aggregate) result.set(id, { aggregate, snapshot });
  }
  return result;
}

export interface ChannelView {
  channel: Channel;
  destination: string;
  /** `retrying`: an attempt failed and the next one is scheduled (`nextAttemptAt`). */
  status: "pending" | "sending" | "retrying" | "sent" | "failed";
  attempts: number;
  lastError: string | null;
  /** When the next attempt is due (the database's time), while retrying. */
  nextAttemptAt?: string;
  sentAt: string | null;
  messageId?: string;
  ts?: string;
}

interface OperationHandling {
  attempts: number | null;
  last_error: string | null;
  status: string | null;
  /** When a retry (or a deferral) was scheduled for, if the operation waits for one. */
  retry_at: Date | null;
  updated_at: Date | null;
}

/**
 * Everything the views of some notifications need beyond their aggregates:
 * each channel operation's outcome (notification.operation_outcomes) and its
 * handling (the engine's readTrail over the operation streams).
 */
async function channelProgress(db: Executor, ids: readonly string[]) {
  const [outcomes, trail] = await Promise.all([readOperationOutcomes(db, ids), readTrail(db, ids, { streams: allChannels.map((c) => c.streams.operations) })]);
  const ops = new Map<string, OperationHandling>();
  const positions = new Map<string, number>();
  for (const record of trail) {
    const channel = channelOfStream(record.stream)!;
    const key = `${channel.name} ${record.id} ${(record.payload as { operationId?: string }).operationId}`;
    // The latest operation with this id wins.
    if ((positions.get(key) ?? 0) > record.position) continue;
    positions.set(key, record.position);
    const handling = record.handling.find((h) => h.concern === channel.concern);
    const handled = handling !== undefined && handling.updatedAt !== null;
    ops.set(key, {
      attempts: handled ? handling.attempts : null,
      last_error: handled ? handling.lastError : null,
      status: handled ? handling.status : null,
      // The engine's, from the row: a stream switched off for the concern does not cancel a retry it scheduled.
      retry_at: handled ? handling.retryAt : null,
      updated_at: handled ? handling.updatedAt : null,
    });
  }
  return {
    handling: (channel: string, id: string, operationId: string) => ops.get(`${channel} ${id} ${operationId}`),
    outcome: (id: string, operationId: string) => outcomes.get(id)?.find((o) => o.operationId === operationId),
  };
}

/** The UI views of several notifications (same order as given): each aggregate plus its channels' live progress (attempts, last error). */
export async function buildViews(db: Executor, aggregates: readonly NotificationAggregate[]) {
  const progress = await channelProgress(db, [...new Set(aggregates.map((a) => a.id))]);
  return aggregates.map((aggregate) => {
    const channels: ChannelView[] = [];
    for (const c of aggregate.channels) {
      const channel = channelOf(c.channel);
      const handling = progress.handling(c.channel, aggregate.id, c.operationId);
      // The one definition of a send's outcome (notification.operation_outcomes), as the saga decided with it.
      const latest = progress.outcome(aggregate.id, c.operationId);
      const success = latest?.outcome === "succeeded" ? latest : undefined;
      const failure = latest?.outcome === "failed" ? latest : undefined;
      // An attempt after the outcome is under way or waiting (an operator re-drove it), as the audit views say.
      const redriven = latest !== undefined && handling?.updated_at != null && !SETTLED.includes(handling.status ?? "") && handling.updated_at > latest.recordedAt;
      const status: ChannelView["status"] = redriven
        ? handling.retry_at
          ? "retrying"
          : "sending"
        : c.outcome === "succeeded" || success
          ? "sent"
          : c.outcome === "failed" || failure
            ? "failed"
            : handling?.retry_at
              ? "retrying"
              : handling?.status
                ? "sending"
                : "pending";
      const view: ChannelView = {
        channel: c.channel,
        destination: c.destination,
        status,
        // No handling row: never claimed, so no attempt (a channel's "requested" event is written in the claiming transaction).
        attempts: handling?.attempts ?? 0,
        lastError: status === "sent" ? null : (c.error ?? handling?.last_error ?? null),
        sentAt: success ? success.recordedAt.toISOString() : null,
        ...(status === "retrying" ? { nextAttemptAt: new Date(handling!.retry_at!).toISOString() } : {}),
        ...(success ? channel.receipt(success.payload) : {}),
      };
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
      // A scheduled notification: when it was (or is) to be sent.
      ...(aggregate.sendAt !== undefined ? { sendAt: aggregate.sendAt } : {}),
      outcome: aggregate.outcome,
      failureReason: aggregate.failureReason,
      channels,
      skipped: aggregate.skipped,
      alert: aggregate.alert,
      // Operators' resends (lineage: each channel's failed operation and the one that replaced it).
      ...(aggregate.resends ? { resends: aggregate.resends } : {}),
      version: aggregate.lastPosition,
    };
  });
}
export type NotificationView = Awaited<ReturnType<typeof buildViews>>[number];

/** The latest views of several notifications, as stored. */
export async function latestViewsJson(db: Executor, ids: readonly string[]): Promise<Map<string, string>> {
  const { rows } = await sql<{ id: string; payload: string }>`
    select distinct on (id) id, payload::text as payload from notification.views
    where id = any(${[...ids]}::text[]) order by id, position desc`.execute(db);
  return new Map(rows.map((r) => [r.id, r.payload]));
}

/** The latest view, as stored (the API serves it raw). */
export async function latestViewJson(db: Executor, id: string): Promise<string | null> {
  return (await latestViewsJson(db, [id])).get(id) ?? null;
}
