import { Kysely, PostgresDialect, sql, type Generated } from "kysely";
import pg from "pg";
import { preparingPool } from "./prepared";

/**
 * Typed view of the engine's fixed tables. Stream tables are declared at
 * migration time and reached through `sql.table(streamName)` in src/streams.
 */
/** A stream switched on or off for a concern, by whom and why. */
interface StreamConcernState {
  stream: string;
  concern: string;
  disabled: boolean;
  changed_at: Generated<Date>;
  changed_by: string;
  reason: string;
}

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
  "tidings.stream_concern_states": StreamConcernState;
  /** Every change of a stream's on/off state per concern, written by the database. */
  "tidings.stream_concern_history": StreamConcernState & { entry: Generated<number>; recorded_by: Generated<string> };
  "tidings.worker_heartbeats": {
    process_id: string;
    worker_ids: string[];
    hostname: string;
    pid: number;
    started_at: Generated<Date>;
    heartbeat_at: Generated<Date>;
  };
}

declare const connectionPool: unique symbol;
/**
 * The pool: each query on its own connection, in its own transaction. Only
 * `createDb` makes one, so a function that opens transactions of its own
 * cannot be handed a transaction (its BEGIN and COMMIT would end the
 * caller's): that fails to compile, as a pool where a transaction is needed does.
 */
export type Db = Kysely<Database> & { readonly [connectionPool]: true };
declare const openTransaction: unique symbol;
/**
 * A connection inside an open transaction, acting as some actor. Only
 * `inTransaction` makes one, so code that needs a transaction (a lock held to
 * commit, several statements that commit together, a role switch) cannot be
 * handed the pool by mistake: that fails to compile.
 */
export type Tx = Kysely<Database> & { readonly [openTransaction]: true };
/** Anything a single query can run on: the pool or an open transaction. */
export type Executor = Kysely<Database>;

const INT8_OID = 20;

/**
 * Positions are bigint in PostgreSQL; we read them as JS numbers (exact up to
 * 2^53, i.e. ~9e15 records per stream) so they compare and serialise simply.
 */
function typeParser(oid: number, format?: "text" | "binary") {
  if (oid === INT8_OID) return (value: string) => Number(value);
  return pg.types.getTypeParser(oid, format) as (value: string) => unknown;
}

export function createPool(connectionString: string, max: number, applicationName = "tidings", options: { role?: string } = {}): pg.Pool {
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
  // Named prepared statements: parsed and planned once per connection (src/db/prepared.ts).
  return new Kysely<Database>({ dialect: new PostgresDialect({ pool: preparingPool(pool) }) }) as Db;
}

function roleOf(actor: string): string {
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
      const result = await fn(conn as Tx);
      await sql.raw("commit").execute(conn);
      return result;
    } catch (error) {
      await sql
        .raw("rollback")
        .execute(conn)
        .catch(() => {});
      throw error;
    }
  });
}

/**
 * Run `fn` inside a savepoint of this transaction: if it throws, what it did
 * (its writes, a role it switched to, locks it took) is rolled back and the
 * transaction goes on as before it.
 */
export async function inSavepoint<T>(tx: Tx, name: string, fn: () => Promise<T>): Promise<T> {
  await sql.raw(`savepoint ${name}`).execute(tx);
  try {
    const result = await fn();
    await sql.raw(`release savepoint ${name}`).execute(tx);
    return result;
  } catch (error) {
    await sql.raw(`rollback to savepoint ${name}`).execute(tx);
    throw error;
  }
}

/**
 * inSavepoint acting as `actor`, then as `returnTo` again (the role the
 * transaction acted as): the savepoint and the role switch go in one round
 * trip and the release and the switch back in another, where asActor inside
 * inSavepoint takes four. A rollback to the savepoint undoes the switch too.
 */
export async function inSavepointAs<T>(tx: Tx, name: string, actor: string, returnTo: string, fn: () => Promise<T>): Promise<T> {
  await sql.raw(`savepoint ${name}; set local role "${roleOf(actor)}"`).execute(tx);
  try {
    const result = await fn();
    await sql.raw(`release savepoint ${name}; set local role "${roleOf(returnTo)}"`).execute(tx);
    return result;
  } catch (error) {
    await sql.raw(`rollback to savepoint ${name}`).execute(tx);
    throw error;
  }
}

/**
 * The database's clock (the transaction's start). Deadlines and the times
 * jobs run are the database's, so every process agrees whatever its own clock.
 */
export async function databaseNow(db: Executor): Promise<Date> {
  const { rows } = await sql<{ now: Date }>`select now() as now`.execute(db);
  return rows[0]!.now;
}

/**
 * Run `fn` acting as `actor` inside a transaction the caller opened (as
 * another actor, or as the service), then act as before again. The role is
 * restored only when `fn` succeeds: after a failure the transaction is
 * aborted, and a SET there would replace the real error with 25P02.
 */
export async function asActor<T>(tx: Tx, actor: string, fn: () => Promise<T>): Promise<T> {
  // The role before, then the switch (set_config('role', .., true) is SET LOCAL ROLE), in one round trip.
  const { rows } = await sql<{ role: string }>`
    select before.role, set_config('role', ${roleOf(actor)}, true)
    from (select current_user::text as role offset 0) before`.execute(tx);
  const result = await fn();
  await sql`select set_config('role', ${rows[0]!.role}, true)`.execute(tx);
  return result;
}
