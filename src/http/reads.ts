import { sql } from "kysely";
import type { Executor } from "../db/database";
import { readTrail } from "../streams/trail";
import { NotificationRecordTypes } from "../notification/notification.schemas";
import { allChannels, channelOf } from "../notification/channels";
import { EntityRecordTypes, type Channel } from "../entities/entity.schemas";
import { EntityStreams } from "../entities/entity.streams";
import { encodeListCursor, type ListCursor, type NotificationStatus } from "./schemas";

/**
 * The API's reads of notifications. Every function runs in a transaction
 * acting as the reader actor (grants in migrations/0002_notification.sql and 0003_api_and_audit.sql).
 */

export interface PendingNotification {
  id: string;
  /** `scheduled`: waiting for its `sendAt` (cancellable until then). */
  status: "accepted" | "scheduled";
  entity: { id: string };
  requestedAt: string;
  sendAt?: string;
}

/**
 * A client operation's `sendAt` while it is still ahead (the database's
 * clock, as the job's run_at is), else null: a notification whose time has
 * come but that no bot has handled yet is merely accepted.
 */
const sendAtAhead = sql<string | null>`case when (o.payload->>'sendAt')::timestamptz > now() then o.payload->>'sendAt' end`;

/** What a notification with no view yet answers: accepted, or scheduled with its time. */
function pendingOf(id: string, row: { entity_id: string; recorded_at: Date; send_at: string | null }): PendingNotification {
  return {
    id,
    status: row.send_at === null ? "accepted" : "scheduled",
    entity: { id: row.entity_id },
    requestedAt: row.recorded_at.toISOString(),
    ...(row.send_at === null ? {} : { sendAt: row.send_at }),
  };
}

/** A notification enqueued but not yet projected: what its client operation says. */
export async function pendingNotification(db: Executor, id: string): Promise<PendingNotification | null> {
  const { rows } = await sql<{ entity_id: string; recorded_at: Date; send_at: string | null }>`
    select o.payload->>'entityId' as entity_id, o.recorded_at, ${sendAtAhead} as send_at from notification.client_operations o
    where o.id = ${id} and o.type = ${NotificationRecordTypes.SendNotificationToEntityOp}
    order by o.position limit 1`.execute(db);
  const row = rows[0];
  return row ? pendingOf(id, row) : null;
}

export interface ListFilter {
  entityId?: string;
  status?: NotificationStatus;
  since?: string;
  until?: string;
  channel?: Channel;
  q?: string;
  /** key=value: one of the client's tags. */
  tag?: string;
  cursor?: ListCursor;
  limit: number;
}

/** Where an operation's payload keeps its destination (SendEmailOp.to, SendSlackMessageOp.channel); another channel's whole payload. */
function destinationText(channel: string) {
  if (channel === "email") return sql`d.payload->>'to'`;
  if (channel === "slack") return sql`d.payload->>'channel'`;
  return sql`d.payload::text`;
}

/**
 * The list's text search (the console's search box): the tracking id or its
 * start, or a part of the subject, or of an address an operation of the
 * notification was sent to (each channel's destination), or of the current
 * email address or Slack destination of the entity it is for: an operator
 * who searches for "ada@example.com" wants Ada's notifications, including
 * those not sent by email or not prepared yet, which no operation names the
 * address in. A scan of the matching rows' payloads (and of the entities'
 * latest versions): fine for an operator's search, not for a client's hot path.
 */
function textMatches(q: string) {
  const pattern = `%${q.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  const prefix = `${q.toLowerCase().replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
  const destinations = allChannels.map((c) => sql`exists (select 1 from ${sql.table(c.streams.operations)} d where d.id = o.id and ${destinationText(c.name)} ilike ${pattern})`);
  const entities = sql`o.payload->>'entityId' in (
      select l.id from (select distinct on (e.id) e.id, e.type, e.payload from ${sql.table(EntityStreams.events)} e order by e.id, e.position desc) l
      where l.type = ${EntityRecordTypes.EntityChangedEvent}
        and (l.payload->'entity'->>'email' ilike ${pattern} or l.payload->'entity'->>'slack' ilike ${pattern}))`;
  return sql`(o.id like ${prefix} or o.payload->>'subject' ilike ${pattern} or ${sql.join(destinations, sql` or `)} or ${entities})`;
}

/**
 * Notifications newest first (by the time they were requested), each as its
 * latest view, or as pending when no view exists yet. Keyset pagination on
 * (recorded_at, position) of the client operation; the cursor keeps the
 * time in microseconds so no two requests in one millisecond are confused.
 * Returns the items as JSON text: views are served as stored.
 */
export async function listNotifications(db: Executor, filter: ListFilter): Promise<{ itemsJson: string[]; next: string | null; viewsBehind: { id: string; position: number }[] }> {
  const conditions = [sql`o.type = ${NotificationRecordTypes.SendNotificationToEntityOp}`];
  if (filter.entityId !== undefined) conditions.push(sql`o.payload->>'entityId' = ${filter.entityId}`);
  if (filter.since !== undefined) conditions.push(sql`o.recorded_at >= ${filter.since}::timestamptz`);
  if (filter.until !== undefined) conditions.push(sql`o.recorded_at < ${filter.until}::timestamptz`);
  if (filter.channel !== undefined) conditions.push(sql`exists (select 1 from ${sql.table(channelOf(filter.channel).streams.operations)} c where c.id = o.id)`);
  if (filter.q !== undefined) conditions.push(textMatches(filter.q));
  if (filter.tag !== undefined) {
    const at = filter.tag.indexOf("=");
    conditions.push(sql`o.payload->'tags'->>${filter.tag.slice(0, at)} = ${filter.tag.slice(at + 1)}`);
  }
  if (filter.cursor) {
    conditions.push(sql`(o.recorded_at, o.position) < ('epoch'::timestamptz + ${filter.cursor.micros}::bigint * interval '1 microsecond', ${filter.cursor.position}::bigint)`);
  }
  type Row = {
    id: string;
    position: number;
    micros: string;
    entity_id: string;
    recorded_at: Date;
    send_at: string | null;
    view: string | null;
    view_version: number | null;
    last_event: number | null;
  };
  const columns = sql`o.id, o.position, (extract(epoch from o.recorded_at) * 1000000)::bigint::text as micros,
                      o.payload->>'entityId' as entity_id, o.recorded_at, ${sendAtAhead} as send_at`;
  const latestView = sql`left join lateral (
      select payload from notification.views v where v.id = o.id order by v.position desc limit 1
    ) v on true`;
  const viewColumns = sql`v.payload::text as view, (v.payload->>'version')::bigint as view_version`;
  // The page is chosen first (without a status filter, before its views are
  // looked up, whatever plan the statistics would suggest for the join), then
  // each row's latest event is looked up beside its view's: the projection
  // writes a view a moment after its events, and a reader that shows the list
  // (the console) must know which rows to look at again.
  const pageRows =
    filter.status === undefined
      ? sql`
          select o.*, ${viewColumns}
          from (
            select ${columns} from notification.client_operations o
            where ${sql.join(conditions, sql` and `)}
            order by o.recorded_at desc, o.position desc
            limit ${filter.limit + 1}
          ) o
          ${latestView}`
      : sql`
          select ${columns}, ${viewColumns}
          from notification.client_operations o
          ${latestView}
          where ${sql.join([...conditions, sql`coalesce(v.payload->>'status', case when ${sendAtAhead} is null then 'accepted' else 'scheduled' end) = ${filter.status}`], sql` and `)}
          order by o.recorded_at desc, o.position desc
          limit ${filter.limit + 1}`;
  const { rows } = await sql<Row>`
    select p.*, e.last_event
    from (${pageRows}) p
    left join lateral (select max(e.position) as last_event from notification.events e where e.id = p.id) e on true
    order by p.recorded_at desc, p.position desc`.execute(db);
  const page = rows.slice(0, filter.limit);
  const last = page.at(-1);
  return {
    itemsJson: page.map((r) => r.view ?? JSON.stringify(pendingOf(r.id, r))),
    next: rows.length > filter.limit && last ? encodeListCursor({ micros: last.micros, position: last.position }) : null,
    viewsBehind: page.flatMap((r) => (r.last_event !== null && r.last_event > (r.view_version ?? -1) ? [{ id: r.id, position: r.last_event }] : [])),
  };
}

/**
 * Where a record stands among those its transaction wrote, when nothing
 * else decides: what the notification is (its operations, events and saga)
 * before what it sets off on a channel, and the read models last. A
 * transaction writes several streams at one recorded_at, and the order it
 * wrote them in is not kept; by stream name, the email operation came
 * before the notification event of the same step, and an internal alert's
 * email before the notification event recording that the alert was sent.
 */
function rankInTransaction(stream: string): number {
  const order = ["notification.client_operations", "notification.internal_operations", "notification.events", "notification.sagas"];
  const at = order.indexOf(stream);
  if (at >= 0) return at;
  if (stream === "notification.snapshots" || stream === "notification.views") return order.length + 2;
  // A channel's operations before its events: an operation is what its events are about.
  return order.length + (stream.endsWith(".events") ? 1 : 0);
}

/**
 * The trail (recorded_at, stream name, position) with each transaction's
 * records put in an order that follows the story: a record after the one
 * that caused it when both were written together (an inline follower's
 * notification event after the channel outcome it reacts to), else by
 * rankInTransaction, then position. Transactions keep their order (when
 * they started), except that one comes after every transaction whose
 * records caused its own: under READ COMMITTED a transaction reads what
 * committed after it began, so the projection's snapshot can have started
 * before the event it was written for.
 */
export function inStoryOrder<T extends { stream: string; position: number; txId: string; recordedAt: Date; causedBy: { stream: string; position: number } | null }>(
  trail: readonly T[],
): T[] {
  const groups = new Map<string, T[]>();
  for (const r of trail) {
    const key = `${r.recordedAt.getTime()}\u0000${r.txId}`;
    const group = groups.get(key) ?? [];
    group.push(r);
    groups.set(key, group);
  }
  const ref = (r: { stream: string; position: number }) => `${r.stream}#${r.position}`;
  const byRef = new Map(trail.map((r) => [ref(r), r]));
  const causeOf = (r: T) => (r.causedBy ? byRef.get(ref(r.causedBy)) : undefined);
  const groupOf = new Map<T, T[]>();
  for (const group of groups.values()) for (const r of group) groupOf.set(r, group);
  // Transactions after those that caused their records; within each, records after their cause.
  const transactions = causesFirst([...groups.values()], (group) => group.map((r) => groupOf.get(causeOf(r)!)).filter((g): g is T[] => g !== undefined));
  return transactions.flatMap((group) =>
    causesFirst(
      [...group].sort((a, b) => rankInTransaction(a.stream) - rankInTransaction(b.stream) || a.stream.localeCompare(b.stream) || a.position - b.position),
      (r) => [causeOf(r)].filter((c): c is T => c !== undefined),
    ),
  );
}

/**
 * Items in their order, each moved after those of them that caused it: the
 * first whose causes are all placed, repeatedly. (A cycle cannot be, a cause
 * is written and committed first; were there one, the order decides.)
 */
function causesFirst<I>(items: readonly I[], causesOf: (item: I) => readonly I[]): I[] {
  const among = new Set(items);
  const placed = new Set<I>();
  const waiting = [...items];
  while (waiting.length > 0) {
    const next = waiting.findIndex((item) => causesOf(item).every((c) => c === item || placed.has(c) || !among.has(c)));
    const [item] = waiting.splice(next < 0 ? 0 : next, 1);
    placed.add(item!);
  }
  return [...placed];
}

/**
 * Every record of one notification in every stream the reader may read
 * (the registry, tidings.streams), ordered by recorded_at (transaction
 * time), and within one transaction in story order (inStoryOrder); each
 * with, per consuming concern, its current handling status and its whole
 * handling history: the engine's readTrail, shaped for the API.
 */
export async function notificationRecords(db: Executor, id: string) {
  const trail = inStoryOrder(await readTrail(db, [id], { history: true }));
  return trail.map((r) => ({
    stream: r.stream,
    position: r.position,
    type: r.type,
    payload: r.payload,
    tags: r.tags,
    causedBy: r.causedBy,
    recordedAt: r.recordedAt.toISOString(),
    recordedBy: r.recordedBy,
    handling: r.handling.map((h) => ({
      concern: h.concern,
      status: h.status,
      attempts: h.attempts,
      lastError: h.lastError,
      history: h.history.map((e) => ({
        entry: e.entry,
        from: e.fromStatus,
        to: e.toStatus,
        action: e.action,
        actor: e.actor,
        reason: e.reason,
        details: e.details,
        attempt: e.attempt,
        recordedAt: e.recordedAt.toISOString(),
        recordedBy: e.recordedBy,
      })),
    })),
  }));
}
