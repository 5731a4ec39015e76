import { randomBytes } from "node:crypto";
import pg from "pg";
import { sql } from "kysely";
import { createDb, createPool, type Db } from "../../src/db/database";

export interface TestDatabase {
  name: string;
  url: string;
  pool: pg.Pool;
  db: Db;
  /** Run SQL as a superuser-ish admin connection (bypassing roles), for assertions. */
  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  close(): Promise<void>;
}

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with jest (test/setup/globalSetup.mjs)`);
  return value;
}

export function databaseUrl(database: string): string {
  const u = new URL(env("TIDINGS_TEST_SERVER_URL"));
  u.pathname = `/${database}`;
  return u.toString();
}

/** A fresh, migrated database cloned from the template; dropped by close(). */
export async function createTestDatabase(poolSize = 20): Promise<TestDatabase> {
  const name = `tidings_t_${env("TIDINGS_TEST_RUN_ID")}_${randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: env("TIDINGS_TEST_SERVER_URL") });
  await admin.connect();
  try {
    await admin.query(`create database ${name} template ${env("TIDINGS_TEST_TEMPLATE")}`);
  } finally {
    await admin.end();
  }
  const url = databaseUrl(name);
  const pool = createPool(url, poolSize, "tidings-test");
  const db = createDb(pool);
  return {
    name,
    url,
    pool,
    db,
    query: (text, values) => pool.query(text, values as unknown[]),
    async close() {
      await db.destroy();
      const admin2 = new pg.Client({ connectionString: env("TIDINGS_TEST_SERVER_URL") });
      await admin2.connect();
      try {
        await admin2.query(`drop database if exists ${name} with (force)`);
      } finally {
        await admin2.end();
      }
    },
  };
}

/**
 * Declare a stream with one producer and one consumer for engine tests: the
 * same declarations migrations use, so tests exercise the real engine.
 */
export async function declareTestStream(
  db: Db,
  options: { stream: string; producer: string; consumer: string; concern?: string; recordTypes?: string[] },
): Promise<void> {
  const { stream, producer, consumer } = options;
  const concern = options.concern ?? consumer;
  for (const actor of new Set([producer, consumer])) {
    const exists = await sql<{ n: number }>`select count(*)::int as n from tidings.actors where name = ${actor}`.execute(db);
    if (exists.rows[0]!.n === 0) await sql`select tidings.declare_actor(${actor}, ${"test actor"})`.execute(db);
  }
  await sql`select tidings.declare_stream(${stream}, 'testing', 'event', null, 'a stream for tests')`.execute(db);
  await sql`select tidings.declare_producer(${stream}, ${producer})`.execute(db);
  await sql`select tidings.declare_consumer(${stream}, ${concern}, ${consumer}, ${options.recordTypes ?? null}::text[], 'test consumer')`.execute(db);
}

export async function waitFor<T>(
  probe: () => Promise<T | undefined | null | false>,
  { timeoutMs = 15_000, intervalMs = 50, what = "condition" } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
