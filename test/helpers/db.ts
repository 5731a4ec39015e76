import { randomBytes } from "node:crypto";
import pg from "pg";
import { sql } from "kysely";
import { createDb, createPool, type Db, type Executor } from "../../src/db/database";

export interface TestDatabase {
  name: string;
  /** The service login's URL: what tidings's own processes connect with. */
  url: string;
  /** A superuser's URL, for tests that set things up or attack as someone else. */
  adminUrl: string;
  /** Connections as the service login (tidings_app): the database as tidings's code sees it. */
  pool: pg.Pool;
  db: Db;
  /** Connections as a superuser: setup and assertions that bypass every role. */
  adminPool: pg.Pool;
  adminDb: Db;
  /** Run SQL as the superuser, for setup and assertions. */
  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  /**
   * A login of its own (e.g. another service sharing the database, or an
   * attacker with a SQL login), granted these roles and CONNECT on this
   * database only; dropped with the database.
   */
  createLogin(options: { prefix: string; grants: string[] }): Promise<TestLogin>;
  close(): Promise<void>;
}

export interface TestLogin {
  name: string;
  url: string;
  pool: pg.Pool;
  db: Db;
}

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the tests with jest (test/setup/globalSetup.mjs)`);
  return value;
}

/** A superuser's URL for this database on the test server. */
export function databaseUrl(database: string): string {
  const u = new URL(env("TIDINGS_TEST_SERVER_URL"));
  u.pathname = `/${database}`;
  return u.toString();
}

/** The service login's URL for this database on the test server. */
export function serviceUrl(database: string): string {
  const u = new URL(databaseUrl(database));
  u.username = env("TIDINGS_TEST_SERVICE_USER");
  u.password = env("TIDINGS_TEST_SERVICE_PASSWORD");
  return u.toString();
}

/** A fresh, migrated database cloned from the template; dropped by close(). */
export async function createTestDatabase(poolSize = 20): Promise<TestDatabase> {
  const name = `tidings_t_${env("TIDINGS_TEST_RUN_ID")}_${randomBytes(5).toString("hex")}`;
  const admin = new pg.Client({ connectionString: env("TIDINGS_TEST_SERVER_URL") });
  await admin.connect();
  try {
    await admin.query(`create database ${name} template ${env("TIDINGS_TEST_TEMPLATE")}`);
    // A clone does not keep the template's database privileges: private again, as migrate leaves it.
    await admin.query(`revoke connect on database ${name} from public`);
    await admin.query(`grant create on database ${name} to tidings_owner`);
    await admin.query(`grant connect on database ${name} to ${env("TIDINGS_TEST_SERVICE_USER")}`);
  } finally {
    await admin.end();
  }
  const url = serviceUrl(name);
  const adminUrl = databaseUrl(name);
  const pool = createPool(url, poolSize, "tidings-test");
  const db = createDb(pool);
  const adminPool = createPool(adminUrl, 5, "tidings-test-admin");
  const adminDb = createDb(adminPool);
  const logins: TestLogin[] = [];
  return {
    name,
    url,
    adminUrl,
    pool,
    db,
    adminPool,
    adminDb,
    query: (text, values) => adminPool.query(text, values as unknown[]),
    async createLogin({ prefix, grants }) {
      const login = `${prefix}_${randomBytes(4).toString("hex")}`;
      const password = randomBytes(12).toString("hex");
      await adminPool.query(`create role ${login} login password '${password}'`);
      for (const role of grants) await adminPool.query(`grant ${role} to ${login}`);
      await adminPool.query(`grant connect on database ${name} to ${login}`);
      const u = new URL(adminUrl);
      u.username = login;
      u.password = password;
      const loginPool = createPool(u.toString(), 5, `tidings-test-${prefix}`);
      const created = { name: login, url: u.toString(), pool: loginPool, db: createDb(loginPool) };
      logins.push(created);
      return created;
    },
    async close() {
      await db.destroy();
      await adminDb.destroy();
      for (const l of logins) await l.db.destroy().catch(() => {});
      const admin2 = new pg.Client({ connectionString: env("TIDINGS_TEST_SERVER_URL") });
      await admin2.connect();
      try {
        await admin2.query(`drop database if exists ${name} with (force)`);
        for (const l of logins) await admin2.query(`drop role if exists ${l.name}`);
      } finally {
        await admin2.end();
      }
    },
  };
}

/**
 * Declare a stream with one producer and one consumer for engine tests: the
 * same declarations migrations use (run as a superuser, as migrations run
 * as the owner), so tests exercise the real engine. Any record type unless
 * `types` lists them.
 */
export async function declareTestStream(
  admin: Db,
  options: { stream: string; producer: string; consumer: string; concern?: string; recordTypes?: string[]; types?: string[] },
): Promise<void> {
  const { stream, producer, consumer } = options;
  const concern = options.concern ?? consumer;
  await asOwner(admin, async (tx) => {
    for (const actor of new Set([producer, consumer])) await declareTestActor(tx, actor);
    await sql`select tidings.declare_stream(${stream}, 'testing', 'event', null, ${options.types ?? null}::text[], 'a stream for tests')`.execute(tx);
    await sql`select tidings.declare_producer(${stream}, ${producer})`.execute(tx);
    await sql`select tidings.declare_consumer(${stream}, ${concern}, ${consumer}, ${options.recordTypes ?? null}::text[], 'test consumer')`.execute(tx);
  });
}

/**
 * Declare an actor as a migration does (inside asOwner). Its role belongs to
 * the server: a superuser creates it (the owner may create roles only while
 * a superuser migrates) and makes the service a member, then the owner
 * declares it.
 */
export async function declareTestActor(ownerTx: Executor, actor: string): Promise<void> {
  const exists = await sql<{ n: number }>`select count(*)::int as n from tidings.actors where name = ${actor}`.execute(ownerTx);
  if (exists.rows[0]!.n > 0) return;
  const role = `tidings_${actor}`;
  await sql`reset role`.execute(ownerTx);
  await sql
    .raw(
      `
    do $$ begin
      if not exists (select 1 from pg_roles where rolname = '${role}') then create role ${role} nologin; end if;
      if not pg_has_role('tidings_service', '${role}', 'MEMBER') then grant ${role} to tidings_service; end if;
    exception when duplicate_object or unique_violation then null;
    end $$`,
    )
    .execute(ownerTx);
  await sql`set local role tidings_owner`.execute(ownerTx);
  await sql`select tidings.declare_actor(${actor}, ${"test actor"})`.execute(ownerTx);
}

/**
 * Run `fn` as tidings_owner, as migrations run: what it creates belongs to
 * the owner, so the engine's security-definer functions can reach it.
 */
export async function asOwner<T>(admin: Db, fn: (tx: Executor) => Promise<T>): Promise<T> {
  return admin.transaction().execute(async (tx) => {
    await sql`set local role tidings_owner`.execute(tx);
    return fn(tx);
  });
}

export async function waitFor<T>(probe: () => Promise<T | undefined | null | false>, { timeoutMs = 15_000, intervalMs = 50, what = "condition" } = {}): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
