import { sql } from "kysely";
import type { Executor } from "../db/database";
import { defaultState, toHistoryEntry, toState, type HandlingRow, type HistoryRow } from "./handling";
import type { HandlingHistoryEntry, HandlingState, StreamRecord } from "./interfaces";
import { handlingTable, historyTable, streamTable } from "./names";
import { toRecord, type RecordRow } from "./read";
import { isAvailable } from "./transitions";

/** A record and what every concern consuming it has done with it. */
export interface TrailRecord extends StreamRecord {
  /** One entry per concern that consumes this record's type, in concern order. */
  handling: TrailHandling[];
}

export interface TrailHandling extends HandlingState {
  /** Every change of this record's handling for this concern, oldest first (empty unless asked for). */
  history: HandlingHistoryEntry[];
}

export interface TrailOptions {
  /** The streams to look in; default: every declared stream the caller may read. */
  streams?: readonly string[];
  /** The streams whose handling to read (the caller must be allowed to); default: every stream read. */
  handlingOf?: readonly string[];
  /** Include each handling's whole history (one more query per stream). */
  history?: boolean;
}

/**
 * The engine's one cross-stream read: every record with one of these ids in
 * the streams asked for, ordered by recorded_at (transaction time), then
 * stream name, then position; each with, per consuming concern, its current
 * handling state (DisabledForStream while the stream is off for the concern
 * and the record waits) and, if asked, its handling history. The API's
 * history of a notification, the admin tools and the projection read
 * through it, so none of them queries a handling table itself.
 */
export async function readTrail(db: Executor, ids: readonly string[], options: TrailOptions = {}): Promise<TrailRecord[]> {
  if (ids.length === 0) return [];
  const streams =
    options.streams ??
    (
      await sql<{ name: string }>`
        select name from tidings.streams where has_table_privilege(current_user, name, 'select') order by name`.execute(db)
    ).rows.map((r) => r.name);
  if (streams.length === 0) return [];
  const { rows } = await sql<RecordRow & { stream: string }>`${sql.join(
    streams.map(
      (s) => sql`select ${s}::text as stream, position, id, type, payload, tags, caused_by_stream, caused_by_position,
                        recorded_at, recorded_by::text as recorded_by, tx_id::text as tx_id, feed_key::text as feed_key
                 from ${streamTable(s)} where id = any(${[...ids]}::text[])`,
    ),
    sql` union all `,
  )} order by recorded_at, stream, position`.execute(db);
  if (rows.length === 0) return [];
  const records = rows.map((r) => toRecord(r.stream, r));

  const present = [...new Set(records.map((r) => r.stream))];
  // The consumers of these streams and whether each is switched off, in one query.
  const { rows: consumers } = await sql<{ stream: string; concern: string; record_types: string[] | null; disabled: boolean }>`
    select c.stream, c.concern, c.record_types, coalesce(d.disabled, false) as disabled
    from tidings.stream_consumers c
    left join tidings.stream_concern_states d on d.stream = c.stream and d.concern = c.concern
    where c.stream = any(${present}::text[])
    order by c.concern`.execute(db);
  const handled = (stream: string) => (options.handlingOf ?? present).includes(stream);
  const isDisabled = (stream: string, concern: string) => consumers.some((c) => c.stream === stream && c.concern === concern && c.disabled);

  // Handling state (and history): one query each per stream that has consumers and records here.
  const handlingOf = new Map<string, HandlingRow>();
  const historyOf = new Map<string, HandlingHistoryEntry[]>();
  const key = (stream: string, position: number, concern: string) => `${stream}\u0000${position}\u0000${concern}`;
  await Promise.all(
    present
      .filter((stream) => handled(stream) && consumers.some((c) => c.stream === stream))
      .map(async (stream) => {
        const positions = records.filter((r) => r.stream === stream).map((r) => r.position);
        const [handling, history] = await Promise.all([
          sql<HandlingRow>`select * from ${handlingTable(stream)} where position = any(${positions}::bigint[])`.execute(db),
          options.history
            ? sql<HistoryRow>`select * from ${historyTable(stream)} where position = any(${positions}::bigint[]) order by entry`.execute(db).then((r) => r.rows)
            : Promise.resolve([] as HistoryRow[]),
        ]);
        for (const h of handling.rows) handlingOf.set(key(stream, h.position, h.concern), h);
        for (const h of history) {
          const k = key(stream, h.position, h.concern);
          historyOf.set(k, [...(historyOf.get(k) ?? []), toHistoryEntry(stream, h)]);
        }
      }),
  );

  return records.map((record) => ({
    ...record,
    handling: consumers
      .filter((c) => c.stream === record.stream && handled(c.stream) && (c.record_types === null || c.record_types.includes(record.type)))
      .map((c) => {
        const row = handlingOf.get(key(record.stream, record.position, c.concern));
        const state = row ? toState(record.stream, row) : defaultState(record.stream, record.position, c.concern);
        const status = isAvailable(state.status) && isDisabled(record.stream, c.concern) ? ("DisabledForStream" as const) : state.status;
        return { ...state, status, history: historyOf.get(key(record.stream, record.position, c.concern)) ?? [] };
      }),
  }));
}
