import { Kysely, PostgresDialect, sql, type Generated } from "kysely";
import pg from "pg";

/**
 * Typed view of the engine's fixed tables. Stream tables are declared at
 * migration time and reached through `sql.table(streamName)` in src/streams.
 */
export interface Database {
  "tidings.streams": {
    name: string;
    subsystem: string;
    kind: string;
    concern: string | null;
    description: string;
    declared_at: Date;
  };
  "tidings.stream_consumers": {
    stream: string;
    concern: string;
    actor: string;
    task_identifier: string;
    record_types: string[] | null;
    description: string;
  };
  "tidings.stream_producers": { stream: string; actor: string };
  "tidings.checkpoint_failures": {
    entry: Generated<number>;
    checkpoint: string;
    id: string;
    records: unknown;
    error: string;
    recorded_at: Generated<Date>;
    recorded_by: Generated<string>;
  };
  "tidings.checkpoints": {
    name: string;
    actor: string;
    cursors: unknown;
    updated_at: Generated<Date>;
    description: string;
  };
  "tidings.actors": { name: string; role_name: string; description: string };
  "tidings.stream_concern_states": {
    stream: string;
    concern: string;
    disabled: boolean;
    changed_at: Generated<Date>;
    changed_by: string;
    reason: string;
  };
  "tidings.stream_concern_history": {
    entry: Generated<number>;
    stream: string;
    concern: string;
    disabled: boolean;
    changed_at: Generated<Date>;
    changed_by: string;
    reason: string;
    recorded_by: Generated<string>;
  };
  "tidings.worker_heartbeats": {
    process_id: string;
    worker_ids: string[];
    hostname: string;
    pid: number;
    started_at: Generated<Date>;
    heartbeat_at: Generated<Date>;
  };
}

export type Db = Kysely<Database>;
/**
 * A connection inside an open transaction: Kysely's own Transaction, or the
 * connection `inTransaction` opened with BEGIN.
 */
export type Tx = Kysely<Database>;
/** Anything queries can run on: the pool-backed Db or an open transaction. */
export type Executor = Kysely<Database>;

const INT8_OID = 20;

/**
 * Positions are bigint in PostgreSQL; we read them as JS numbers (exact up to
 * 2^53, i.e. ~9e15 records per stream) so they compare and serialise simply.
 */
function typeParser(oid: number, format?: "text" | "binary") {
  if (oid === INT8_OID) return (value: string) => Number(value);
  return pg.types.getTypeParser(oid, format as "text") as (value: string) => unknown;
}

export function createPool(
  connectionString: string,
  max: number,
  applicationName = "tidings",
  options: { role?: string } = {},
): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    application_name: applicationName,
    types: { getTypeParser: typeParser as typeof pg.types.getTypeParser },
    // Every connection acts as this role from the start (the migrator acting as the owner).
    ...(options.role ? { options: `-c role=${options.role}` } : {}),
  });
  // An idle client that loses its connection (server restart, terminated
  // backend) emits 'error' on the pool; without a listener it would crash the process.
  pool.on("error", () => {});
  // Same for a client that loses its connection while checked out: the query
  // in flight rejects on its own; the event must not crash the process.
  pool.on("connect", (client) => client.on("error", () => {}));
  return pool;
}

export function createDb(pool: pg.Pool): Db {
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
}

/** Actors of migrations/0002_notification.sql: each one a PostgreSQL role `tidings_<actor>`. */
export type Actor =
  | "client"
  | "notification_bot"
  | "saga_bot"
  | "reaction_bot"
  | "internal_operation_bot"
  | "projection_bot"
  | "email_bot"
  | "slack_bot"
  | "entity_admin"
  | "reader"
  | "operator"
  | "auditor";

export function roleOf(actor: string): string {
  if (!/^[a-z][a-z0-9_]*$/.test(actor)) throw new Error(`invalid actor name "${actor}"`);
  return `tidings_${actor}`;
}

/**
 * Run `fn` in a transaction acting as `actor`: `SET LOCAL ROLE` makes
 * PostgreSQL itself refuse anything the actor was not granted (a bot writing
 * another subsystem's stream fails with "permission denied").
 */
export async function inTransaction<T>(db: Db, actor: string | null, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return db.connection().execute(async (conn) => {
    // BEGIN and the role switch in one round trip (simple query protocol):
    // every bot job opens a transaction, so this is on the hot path.
    await sql.raw(actor ? `begin; set local role "${roleOf(actor)}"` : "begin").execute(conn);
    try {
      const result = await fn(conn);
      await sql.raw("commit").execute(conn);
      return result;
    } catch (error) {
      await sql.raw("rollback").execute(conn).catch(() => {});
      throw error;
    }
  });
}

/**
 * The database's clock (the transaction's start). Deadlines and the times
 * jobs run are the database's, so every process agrees whatever its own clock.
 */
export async function databaseNow(db: Kysely<Database>): Promise<Date> {
  const { rows } = await sql<{ now: Date }>`select now() as now`.execute(db);
  return rows[0]!.now;
}

/** Switch role inside a transaction the caller already opened. */
export async function actAs(tx: Tx, actor: string): Promise<void> {
  await sql`set local role ${sql.id(roleOf(actor))}`.execute(tx);
}
