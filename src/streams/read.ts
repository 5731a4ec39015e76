import { sql, type RawBuilder } from "kysely";
import type { Executor } from "../db/database";
import { ValidationError } from "../errors/errors";
import type { StreamRecord, Tags } from "./interfaces";
import { assertStreamName, streamTable } from "./names";

export interface RecordRow {
  position: number;
  id: string;
  type: string;
  payload: unknown;
  tags: Tags;
  caused_by_stream: string | null;
  caused_by_position: number | null;
  recorded_at: Date;
  recorded_by: string;
  tx_id: string;
  feed_key: string;
}

const COLUMNS = sql`position, id, type, payload, tags, caused_by_stream, caused_by_position, recorded_at, recorded_by, tx_id::text as tx_id, feed_key::text as feed_key`;
/** The record columns of a stream table aliased `r`, for joins. */
export const RECORD_COLUMNS_R = sql`r.position, r.id, r.type, r.payload, r.tags, r.caused_by_stream, r.caused_by_position, r.recorded_at, r.recorded_by, r.tx_id::text as tx_id, r.feed_key::text as feed_key`;

/** Row type → domain type, in one place. */
export function toRecord(stream: string, row: RecordRow): StreamRecord {
  return {
    stream,
    position: row.position,
    id: row.id,
    type: row.type,
    payload: row.payload,
    tags: row.tags,
    causedBy: row.caused_by_stream !== null && row.caused_by_position !== null ? { stream: row.caused_by_stream, position: row.caused_by_position } : null,
    recordedAt: row.recorded_at,
    recordedBy: row.recorded_by,
    txId: row.tx_id,
    feedKey: row.feed_key,
  };
}

export interface RecordFilter {
  ids?: readonly string[];
  types?: readonly string[];
  /** Every tag given must match (name = value). */
  tags?: Tags;
  afterPosition?: number;
  /** At most this many (default 10,000); null: all of them (set-based reads by id). */
  limit?: number | null;
}

function filterSql(filter: RecordFilter): RawBuilder<unknown> {
  const conditions: RawBuilder<unknown>[] = [sql`true`];
  if (filter.ids) conditions.push(sql`id = any(${[...filter.ids]}::text[])`);
  if (filter.types) conditions.push(sql`type = any(${[...filter.types]}::text[])`);
  if (filter.tags && Object.keys(filter.tags).length > 0) conditions.push(sql`tags @> ${JSON.stringify(filter.tags)}::jsonb`);
  if (filter.afterPosition !== undefined) conditions.push(sql`position > ${filter.afterPosition}`);
  return sql.join(conditions, sql` and `);
}

export async function getByPosition(db: Executor, stream: string, position: number): Promise<StreamRecord | undefined> {
  const { rows } = await sql<RecordRow>`select ${COLUMNS} from ${streamTable(stream)} where position = ${position}`.execute(db);
  return rows[0] && toRecord(stream, rows[0]);
}

/** The newest record with this id (and type, when given). */
export async function getLatestById(
  db: Executor,
  stream: string,
  id: string,
  options: { type?: string; types?: readonly string[]; recordedAtOrBefore?: Date } = {},
): Promise<StreamRecord | undefined> {
  const types = options.types ?? (options.type ? [options.type] : undefined);
  const asOf = options.recordedAtOrBefore ? sql`and recorded_at <= ${options.recordedAtOrBefore}` : sql``;
  const { rows } = await sql<RecordRow>`
    select ${COLUMNS} from ${streamTable(stream)}
    where ${filterSql({ ids: [id], types })} ${asOf}
    order by position desc limit 1`.execute(db);
  return rows[0] && toRecord(stream, rows[0]);
}

/** The latest record of each of these ids (of these types), in one query. */
export async function getLatestByIds(db: Executor, stream: string, ids: readonly string[], options: { types?: readonly string[] } = {}): Promise<Map<string, StreamRecord>> {
  const { rows } = await sql<RecordRow>`
    select distinct on (id) ${COLUMNS} from ${streamTable(stream)}
    where ${filterSql({ ids, types: options.types })}
    order by id, position desc`.execute(db);
  return new Map(rows.map((r) => [r.id, toRecord(stream, r)]));
}

/**
 * getLatestByIds over several streams in one round trip: for each query (a
 * stream and, when given, its types) the latest record of each id, in the
 * order asked.
 */
export async function getLatestByIdsIn(
  db: Executor,
  ids: readonly string[],
  queries: ReadonlyArray<{ stream: string; types?: readonly string[] }>,
): Promise<Array<Map<string, StreamRecord>>> {
  const parts = queries.map(
    (q, i) => sql`(select distinct on (id) ${sql.lit(i)}::integer as query, ${COLUMNS} from ${streamTable(q.stream)}
      where ${filterSql({ ids, types: q.types })} order by id, position desc)`,
  );
  const { rows } = await sql<RecordRow & { query: number }>`${sql.join(parts, sql` union all `)}`.execute(db);
  const results = queries.map(() => new Map<string, StreamRecord>());
  for (const row of rows) results[row.query]!.set(row.id, toRecord(queries[row.query]!.stream, row));
  return results;
}

/** Every record with this id, oldest first. */
export async function getAllById(db: Executor, stream: string, id: string): Promise<StreamRecord[]> {
  return findRecords(db, stream, { ids: [id] });
}

/** Records matching a filter, in position order. */
export async function findRecords(db: Executor, stream: string, filter: RecordFilter = {}): Promise<StreamRecord[]> {
  const limit = filter.limit === null ? sql`` : sql`limit ${filter.limit ?? 10_000}`;
  const { rows } = await sql<RecordRow>`
    select ${COLUMNS} from ${streamTable(stream)}
    where ${filterSql(filter)}
    order by position ${limit}`.execute(db);
  return rows.map((r) => toRecord(stream, r));
}

/**
 * A resumable feed cursor. Positions come from a sequence, so a slower
 * transaction can commit position 5 after a faster one committed 6: a reader
 * that remembered "6" would skip 5 for ever. The feed therefore reads in
 * (feed_key, position) order and only below the feed horizon, which only
 * transactions still appending to the stream hold back
 * (tidings.feed_horizon in migrations/0001_engine.sql): nothing can later
 * appear before the cursor.
 */
export interface FeedCursor {
  key: string;
  position: number;
}

export const FEED_START: FeedCursor = { key: "0", position: 0 };

export function encodeCursor(cursor: FeedCursor): string {
  return `${cursor.key}-${cursor.position}`;
}

export function decodeCursor(text: string): FeedCursor {
  const match = /^(\d{1,20})-(\d{1,16})$/.exec(text);
  if (!match || BigInt(match[1]!) > 0xffffffffffffffffn) throw new ValidationError(`invalid feed cursor "${text}": expected <key>-<position> as returned by the feed`);
  return { key: match[1]!, position: Number(match[2]) };
}

/** The cursor that resumes right after this record. */
export function cursorAfter(record: StreamRecord): FeedCursor {
  return { key: record.feedKey, position: record.position };
}

/**
 * Below this, nothing new can appear in these streams (the feed horizon).
 * Read it in a statement of its own, before the read it bounds, in a READ
 * COMMITTED transaction (the database refuses otherwise).
 */
export async function feedHorizon(db: Executor, streams: readonly string[]): Promise<string> {
  for (const stream of streams) assertStreamName(stream);
  const { rows } = await sql<{ horizon: string }>`select tidings.feed_horizon(${[...streams]}::text[])::text as horizon`.execute(db);
  return rows[0]!.horizon;
}

/**
 * Records after the cursor, below the horizon. `stalled`: a committed record
 * waits exactly at the horizon. That happens when a transaction that began
 * before newer ones completed appends last: its key is the horizon itself,
 * which moves only when a newer transaction completes. On a busy server one
 * always does; a quiet one gets `nudgeHorizon`.
 */
export async function readAfter(
  db: Executor,
  stream: string,
  after: FeedCursor = FEED_START,
  options: { limit?: number; horizon?: string } = {},
): Promise<{ records: StreamRecord[]; next: FeedCursor; stalled: boolean }> {
  assertStreamName(stream);
  const horizon = options.horizon ?? (await feedHorizon(db, [stream]));
  const { results, stalled } = await readAfterEach(db, [{ stream, after }], { limit: options.limit ?? 100, horizon });
  return { ...results[0]!, stalled };
}

/**
 * readAfter over several streams, each from its own cursor, below one
 * horizon, in one statement: what a catch-up bot reads each round.
 * `stalled`: some stream read less than a full page and has a committed
 * record waiting exactly at the horizon.
 */
export async function readAfterEach(
  db: Executor,
  reads: ReadonlyArray<{ stream: string; after: FeedCursor }>,
  options: { limit: number; horizon: string },
): Promise<{ results: Array<{ records: StreamRecord[]; next: FeedCursor }>; stalled: boolean }> {
  const parts = reads.flatMap(({ stream, after }, i) => {
    assertStreamName(stream);
    return [
      // s.feed_key: the xid8 column. Unqualified, ORDER BY takes the output column of that name,
      // text, where "997" sorts after "1004": a batch crossing a power of ten came out of order.
      sql`(select ${sql.lit(i)}::integer as part, false as waiting, ${COLUMNS} from ${streamTable(stream)} as s
        where (feed_key, position) > (${after.key}::xid8, ${after.position}::bigint) and feed_key < ${options.horizon}::xid8
        order by s.feed_key, s.position limit ${options.limit})`,
      sql`(select ${sql.lit(i)}::integer, true, null, null, null, null, null, null, null, null, null, null, null
        where exists (select 1 from ${streamTable(stream)} where feed_key = ${options.horizon}::xid8))`,
    ];
  });
  const { rows } = await sql<RecordRow & { part: number; waiting: boolean }>`${sql.join(parts, sql` union all `)}`.execute(db);
  const records = reads.map(() => [] as StreamRecord[]);
  let stalled = false;
  const waiting = new Set<number>();
  for (const row of rows) {
    if (row.waiting) waiting.add(row.part);
    else records[row.part]!.push(toRecord(reads[row.part]!.stream, row));
  }
  // A full page is not stalled: the records at the horizon come on a later page.
  for (const part of waiting) stalled ||= records[part]!.length < options.limit;
  // Union all keeps each part's order (feed key, then position).
  return {
    results: reads.map(({ after }, i) => {
      const last = records[i]!.at(-1);
      return { records: records[i]!, next: last ? cursorAfter(last) : after };
    }),
    stalled,
  };
}

/**
 * Move the horizon past records that wait exactly at it (see readAfter's
 * `stalled`): a transaction that takes a new transaction id and completes.
 * Run it on the pool, outside any open transaction.
 */
export async function nudgeHorizon(db: Executor): Promise<void> {
  await sql`select pg_current_xact_id()`.execute(db);
}
