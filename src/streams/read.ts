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
}

const COLUMNS = sql`position, id, type, payload, tags, caused_by_stream, caused_by_position, recorded_at, recorded_by, tx_id::text as tx_id`;
/** The record columns of a stream table aliased `r`, for joins. */
export const RECORD_COLUMNS_R = sql`r.position, r.id, r.type, r.payload, r.tags, r.caused_by_stream, r.caused_by_position, r.recorded_at, r.recorded_by, r.tx_id::text as tx_id`;

/** Row type → domain type, in one place. */
export function toRecord(stream: string, row: RecordRow): StreamRecord {
  return {
    stream,
    position: row.position,
    id: row.id,
    type: row.type,
    payload: row.payload,
    tags: row.tags,
    causedBy:
      row.caused_by_stream !== null && row.caused_by_position !== null
        ? { stream: row.caused_by_stream, position: row.caused_by_position }
        : null,
    recordedAt: row.recorded_at,
    recordedBy: row.recorded_by,
    txId: row.tx_id,
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
  if (filter.tags && Object.keys(filter.tags).length > 0)
    conditions.push(sql`tags @> ${JSON.stringify(filter.tags)}::jsonb`);
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
export async function getLatestByIds(
  db: Executor,
  stream: string,
  ids: readonly string[],
  options: { types?: readonly string[] } = {},
): Promise<Map<string, StreamRecord>> {
  const { rows } = await sql<RecordRow>`
    select distinct on (id) ${COLUMNS} from ${streamTable(stream)}
    where ${filterSql({ ids, types: options.types })}
    order by id, position desc`.execute(db);
  return new Map(rows.map((r) => [r.id, toRecord(stream, r)]));
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
 * (writing transaction id, position) order and only returns records written by
 * transactions older than every transaction still in progress
 * (`pg_snapshot_xmin`): nothing can later appear before the cursor.
 */
export interface FeedCursor {
  txId: string;
  position: number;
}

export const FEED_START: FeedCursor = { txId: "0", position: 0 };

export function encodeCursor(cursor: FeedCursor): string {
  return `${cursor.txId}-${cursor.position}`;
}

export function decodeCursor(text: string): FeedCursor {
  const match = /^(\d{1,20})-(\d{1,16})$/.exec(text);
  if (!match || BigInt(match[1]!) > 0xffffffffffffffffn) throw new ValidationError(`invalid feed cursor "${text}": expected <txid>-<position> as returned by the feed`);
  return { txId: match[1]!, position: Number(match[2]) };
}

export async function readAfter(
  db: Executor,
  stream: string,
  after: FeedCursor = FEED_START,
  options: { limit?: number; types?: readonly string[]; tags?: Tags } = {},
): Promise<{ records: StreamRecord[]; next: FeedCursor }> {
  assertStreamName(stream);
  const limit = options.limit ?? 100;
  const { rows } = await sql<RecordRow>`
    select ${COLUMNS} from ${streamTable(stream)}
    where (tx_id, position) > (${after.txId}::xid8, ${after.position}::bigint)
      and tx_id < pg_snapshot_xmin(pg_current_snapshot())
      and ${filterSql({ types: options.types, tags: options.tags })}
    order by tx_id, position
    limit ${limit}`.execute(db);
  const records = rows.map((r) => toRecord(stream, r));
  const last = records.at(-1);
  return { records, next: last ? { txId: last.txId, position: last.position } : after };
}
