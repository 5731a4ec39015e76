import { sql } from "kysely";
import type { Executor } from "../db/database";
import type { HandlingStatus } from "../streams/interfaces";
import { handlingTable, historyTable, streamTable } from "../streams/names";
import { NotificationRecordTypes } from "../notification/notification.schemas";
import { isAvailable } from "../streams/transitions";
import { encodeListCursor, type ListCursor, type NotificationStatus } from "./schemas";

/**
 * The API's reads of notifications. Every function runs in a transaction
 * acting as the reader actor (grants in migrations/0002_notification.sql and 0003_api_and_audit.sql).
 */

export interface PendingNotification {
  id: string;
  status: "accepted";
  entity: { id: string };
  requestedAt: string;
}

/** A notification enqueued but not yet projected: what its client operation says. */
export async function pendingNotification(db: Executor, id: string): Promise<PendingNotification | null> {
  const { rows } = await sql<{ entity_id: string; recorded_at: Date }>`
    select payload->>'entityId' as entity_id, recorded_at from notification.client_operations
    where id = ${id} and type = ${NotificationRecordTypes.SendNotificationToEntityOp}
    order by position limit 1`.execute(db);
  const row = rows[0];
  return row ? { id, status: "accepted", entity: { id: row.entity_id }, requestedAt: row.recorded_at.toISOString() } : null;
}

export interface ListFilter {
  entityId?: string;
  status?: NotificationStatus;
  since?: string;
  cursor?: ListCursor;
  limit: number;
}

/**
 * Notifications newest first (by the time they were requested), each as its
 * latest view, or as pending when no view exists yet. Keyset pagination on
 * (recorded_at, position) of the client operation; the cursor keeps the
 * time in microseconds so no two requests in one millisecond are confused.
 * Returns the items as JSON text: views are served as stored.
 */
export async function listNotifications(db: Executor, filter: ListFilter): Promise<{ itemsJson: string[]; next: string | null }> {
  const conditions = [sql`o.type = ${NotificationRecordTypes.SendNotificationToEntityOp}`];
  if (filter.entityId !== undefined) conditions.push(sql`o.payload->>'entityId' = ${filter.entityId}`);
  if (filter.since !== undefined) conditions.push(sql`o.recorded_at >= ${filter.since}::timestamptz`);
  if (filter.cursor) {
    conditions.push(
      sql`(o.recorded_at, o.position) < ('epoch'::timestamptz + ${filter.cursor.micros}::bigint * interval '1 microsecond', ${filter.cursor.position}::bigint)`,
    );
  }
  type Row = { id: string; position: number; micros: string; entity_id: string; recorded_at: Date; view: string | null };
  const columns = sql`o.id, o.position, (extract(epoch from o.recorded_at) * 1000000)::bigint::text as micros,
                      o.payload->>'entityId' as entity_id, o.recorded_at`;
  const latestView = sql`left join lateral (
      select payload from notification.views v where v.id = o.id order by v.position desc limit 1
    ) v on true`;
  // Without a status filter, the page is chosen first and only its views are
  // looked up, whatever plan the statistics would suggest for the join.
  const { rows } =
    filter.status === undefined
      ? await sql<Row>`
          select o.*, v.payload::text as view
          from (
            select ${columns} from notification.client_operations o
            where ${sql.join(conditions, sql` and `)}
            order by o.recorded_at desc, o.position desc
            limit ${filter.limit + 1}
          ) o
          ${latestView}
          order by o.recorded_at desc, o.position desc`.execute(db)
      : await sql<Row>`
          select ${columns}, v.payload::text as view
          from notification.client_operations o
          ${latestView}
          where ${sql.join([...conditions, sql`coalesce(v.payload->>'status', 'accepted') = ${filter.status}`], sql` and `)}
          order by o.recorded_at desc, o.position desc
          limit ${filter.limit + 1}`.execute(db);
  const page = rows.slice(0, filter.limit);
  const last = page.at(-1);
  return {
    itemsJson: page.map(
      (r) =>
        r.view ??
        JSON.stringify({ id: r.id, status: "accepted", entity: { id: r.entity_id }, requestedAt: r.recorded_at.toISOString() }),
    ),
    next: rows.length > filter.limit && last ? encodeListCursor({ micros: last.micros, position: last.position }) : null,
  };
}

interface RecordRow {
  stream: string;
  position: number;
  type: string;
  payload: unknown;
  tags: Record<string, string>;
  caused_by_stream: string | null;
  caused_by_position: number | null;
  recorded_at: Date;
  recorded_by: string;
}

interface HandlingRow {
  position: number;
  concern: string;
  status: HandlingStatus;
  attempts: number;
  last_error: string | null;
}

interface HistoryRow {
  entry: number;
  position: number;
  concern: string;
  from_status: HandlingStatus;
  to_status: HandlingStatus;
  action: string;
  actor: string;
  reason: string | null;
  details: unknown;
  attempt: number;
  recorded_at: Date;
  recorded_by: string;
}

/**
 * Every record of one notification in every stream the reader may read
 * (the registry, tidings.streams), ordered by recorded_at (transaction
 * time), then stream name, then position; each with, per consuming concern,
 * its current handling status and its whole handling history.
 */
export async function notificationRecords(db: Executor, id: string) {
  const { rows: streams } = await sql<{ name: string }>`
    select name from tidings.streams
    where has_table_privilege(current_user, name, 'select')
    order by name`.execute(db);
  if (streams.length === 0) return [];
  const { rows: records } = await sql<RecordRow>`${sql.join(
    streams.map(
      (s) => sql`select ${s.name}::text as stream, position, type, payload, tags, caused_by_stream, caused_by_position,
                        recorded_at, recorded_by::text as recorded_by
                 from ${streamTable(s.name)} where id = ${id}`,
    ),
    sql` union all `,
  )} order by recorded_at, stream, position`.execute(db);
  if (records.length === 0) return [];

  const consumers = await db
    .selectFrom("tidings.stream_consumers")
    .select(["stream", "concern", "record_types"])
    .orderBy("concern")
    .execute();
  const disabled = await db
    .selectFrom("tidings.stream_concern_states")
    .select(["stream", "concern"])
    .where("disabled", "=", true)
    .execute();
  const isDisabled = (stream: string, concern: string) => disabled.some((d) => d.stream === stream && d.concern === concern);

  // Handling state and history: two queries per stream that has consumers and records here.
  const handlingByStream = new Map<string, { handling: HandlingRow[]; history: HistoryRow[] }>();
  for (const stream of new Set(records.map((r) => r.stream))) {
    if (!consumers.some((c) => c.stream === stream)) continue;
    const positions = records.filter((r) => r.stream === stream).map((r) => r.position);
    const handling = await sql<HandlingRow>`
      select position, concern, status, attempts, last_error from ${handlingTable(stream)}
      where position = any(${positions}::bigint[])`.execute(db);
    const history = await sql<HistoryRow>`
      select * from ${historyTable(stream)} where position = any(${positions}::bigint[]) order by entry`.execute(db);
    handlingByStream.set(stream, { handling: handling.rows, history: history.rows });
  }

  return records.map((r) => {
    const state = handlingByStream.get(r.stream);
    const handling = consumers
      .filter((c) => c.stream === r.stream && (c.record_types === null || c.record_types.includes(r.type)))
      .map((c) => {
        const row = state?.handling.find((h) => h.position === r.position && h.concern === c.concern);
        const status: HandlingStatus = row?.status ?? "AvailableByDefault";
        return {
          concern: c.concern,
          status: isAvailable(status) && isDisabled(r.stream, c.concern) ? ("DisabledForStream" as const) : status,
          attempts: row?.attempts ?? 0,
          lastError: row?.last_error ?? null,
          history: (state?.history ?? [])
            .filter((h) => h.position === r.position && h.concern === c.concern)
            .map((h) => ({
              entry: h.entry,
              from: h.from_status,
              to: h.to_status,
              action: h.action,
              actor: h.actor,
              reason: h.reason,
              details: h.details,
              attempt: h.attempt,
              recordedAt: h.recorded_at.toISOString(),
              recordedBy: h.recorded_by,
            })),
        };
      });
    return {
      stream: r.stream,
      position: r.position,
      type: r.type,
      payload: r.payload,
      tags: r.tags,
      causedBy:
        r.caused_by_stream !== null && r.caused_by_position !== null
          ? { stream: r.caused_by_stream, position: r.caused_by_position }
          : null,
      recordedAt: r.recorded_at.toISOString(),
      recordedBy: r.recorded_by,
      handling,
    };
  });
}
