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
export async function append(
  db: Executor,
  stream: string,
  records: readonly NewRecord[],
  strategy: ExistingRecordStrategy = "write_always",
): Promise<AppendResult[]> {
  assertStreamName(stream);
  if (records.length === 0) return [];
  try {
    const { rows } = await sql<{ ordinal: number; position: number; id: string; type: string; written: boolean }>`
      select ordinal, position, id, type, written
      from tidings.append(${stream}, ${JSON.stringify(records)}::jsonb, ${strategy})`.execute(db);
    return rows
      .sort((a, b) => a.ordinal - b.ordinal)
      .map(({ position, id, type, written }) => ({ position, id, type, written }));
  } catch (error) {
    throw translateStreamError(error);
  }
}

export async function appendOne(
  db: Executor,
  stream: string,
  record: NewRecord,
  strategy: ExistingRecordStrategy = "write_always",
): Promise<AppendResult> {
  const [result] = await append(db, stream, [record], strategy);
  return result!;
}

/** Engine errors raised in PostgreSQL become the matching TidingsError (the original kept as cause). */
export function translateStreamError(error: unknown): unknown {
  const message = (error as Error)?.message ?? String(error);
  switch (pgCode(error)) {
    case PgCodes.recordExists:
      return new RecordExistsError(message, { cause: error });
    case PgCodes.unknownStream:
      return new NotFoundError(message, { cause: error });
    case PgCodes.insufficientPrivilege:
      return new ForbiddenError(`refused by PostgreSQL: ${message}`, { cause: error });
    default:
      return error;
  }
}

/**
 * Whether a record with this id (and type) exists, through the engine's
 * security-definer lookup: a write-only producer may ask this much.
 */
export async function recordExists(db: Executor, stream: string, id: string, type?: string): Promise<boolean> {
  assertStreamName(stream);
  const { rows } = await sql<{ position: number | null }>`
    select tidings.existing_position(${stream}, ${id}, ${type ?? null}) as position`.execute(db);
  return rows[0]?.position != null;
}
