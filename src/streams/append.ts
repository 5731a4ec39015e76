import { sql } from "kysely";
import type { Executor } from "../db/database";
import { ConflictError, ForbiddenError, NotFoundError, PgCodes, pgCode } from "../errors/errors";
import type { AppendResult, ExistingRecordStrategy, NewRecord } from "./interfaces";
import { assertStreamName } from "./names";

export class RecordExistsError extends ConflictError {}

/**
 * Append records to a stream in one round trip (`tidings.append`). Runs with
 * the transaction's role, so PostgreSQL refuses a stream the actor does not
 * produce. The outbox trigger queues the consumers' jobs in the same
 * transaction. Results come back in input order.
 */
export async function append(db: Executor, stream: string, records: readonly NewRecord[], strategy: ExistingRecordStrategy = "write_always"): Promise<AppendResult[]> {
  assertStreamName(stream);
  if (records.length === 0) return [];
  try {
    const { rows } = await sql<{ ordinal: number; position: number; id: string; type: string; written: boolean }>`
      select ordinal, position, id, type, written
      from tidings.append(${stream}, ${JSON.stringify(records)}::jsonb, ${strategy})`.execute(db);
    return rows.sort((a, b) => a.ordinal - b.ordinal).map(({ position, id, type, written }) => ({ position, id, type, written }));
  } catch (error) {
    throw translateStreamError(error);
  }
}

export async function appendOne(db: Executor, stream: string, record: NewRecord, strategy: ExistingRecordStrategy = "write_always"): Promise<AppendResult> {
  const [result] = await append(db, stream, [record], strategy);
  return result!;
}

/**
 * Appends collected while a batch is handled and written together: one
 * `tidings.append` per (stream, strategy) instead of one per record. Records
 * of one group keep their order, and groups are written in the order they
 * were first used, so a handler that always appends A before B for a record
 * still gets A before B for every record.
 */
export class AppendBuffer {
  private readonly groups: Array<{ stream: string; strategy: ExistingRecordStrategy; records: NewRecord[] }> = [];

  add(stream: string, record: NewRecord, strategy: ExistingRecordStrategy = "write_always"): void {
    let group = this.groups.find((g) => g.stream === stream && g.strategy === strategy);
    if (!group) this.groups.push((group = { stream, strategy, records: [] }));
    group.records.push(record);
  }

  /**
   * Writes what was collected; returns the records written, with their
   * streams. Several groups go in one statement (one round trip), its calls
   * of tidings.append run in order; groups that may throw on an existing
   * record go one by one, so the groups before one that throws stay written
   * as they would have been.
   */
  async flush(db: Executor): Promise<Array<AppendResult & { stream: string }>> {
    const groups = this.groups.splice(0);
    const written: Array<AppendResult & { stream: string }> = [];
    if (groups.length === 1 || groups.some((g) => g.strategy.startsWith("throw"))) {
      for (const group of groups) {
        for (const result of await append(db, group.stream, group.records, group.strategy)) if (result.written) written.push({ ...result, stream: group.stream });
      }
      return written;
    }
    if (groups.length === 0) return written;
    for (const group of groups) assertStreamName(group.stream);
    const calls = groups.map(
      (g, i) => sql`select ${sql.lit(i)}::integer as grp, ordinal, position, id, type, written
        from tidings.append(${g.stream}, ${JSON.stringify(g.records)}::jsonb, ${g.strategy})`,
    );
    let rows: Array<{ grp: number; ordinal: number; position: number; id: string; type: string; written: boolean }>;
    try {
      ({ rows } = await sql<(typeof rows)[number]>`${sql.join(calls, sql` union all `)}`.execute(db));
    } catch (error) {
      throw translateStreamError(error);
    }
    rows.sort((a, b) => a.grp - b.grp || a.ordinal - b.ordinal);
    for (const { grp, position, id, type, written: isNew } of rows) if (isNew) written.push({ position, id, type, written: isNew, stream: groups[grp]!.stream });
    return written;
  }
}

/** Append now, or, inside a batch that collects its appends (`out`), with the batch. */
export async function appendFor(ctx: { tx: Executor; out?: AppendBuffer }, stream: string, record: NewRecord, strategy: ExistingRecordStrategy = "write_always"): Promise<void> {
  if (ctx.out) ctx.out.add(stream, record, strategy);
  else await append(ctx.tx, stream, [record], strategy);
}

/**
 * Which of these ids have a record (of this type) in the stream, in one round
 * trip, through the engine's security-definer lookup: a write-only producer
 * may ask this much.
 */
export async function existingIds(db: Executor, stream: string, ids: readonly string[], type?: string): Promise<Set<string>> {
  assertStreamName(stream);
  const { rows } = await sql<{ id: string }>`
    select k.id from unnest(${[...ids]}::text[]) with ordinality as k(id, ordinal)
    join tidings.existing_positions(${stream}, ${[...ids]}::text[], ${type === undefined ? null : ids.map(() => type)}::text[]) e using (ordinal)
    where e.position is not null`.execute(db);
  return new Set(rows.map((r) => r.id));
}

/** Engine errors raised in PostgreSQL become the matching TidingsError (the original kept as cause). */
function translateStreamError(error: unknown): unknown {
  const message = (error as Error)?.message ?? String(error);
  switch (pgCode(error)) {
    case PgCodes.recordExists:
      return new RecordExistsError(message, { cause: error });
    case PgCodes.unknownStream:
      return new NotFoundError(message, { cause: error });
    case PgCodes.erased:
      return new ConflictError(message, { cause: error });
    case PgCodes.insufficientPrivilege:
      return new ForbiddenError(`refused by PostgreSQL: ${message}`, { cause: error });
    default:
      return error;
  }
}
