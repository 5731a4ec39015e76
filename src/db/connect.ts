import path from "node:path";
import type { Config } from "../config/config";
import { ExternalError } from "../errors/errors";
import type { Logger } from "../logging/logger";
import { redactUrl } from "../logging/redact";
import { createDb, createPool, type Db } from "./database";
import pg from "pg";
import { EMBEDDED_SERVICE_PASSWORD, embeddedUrl, startEmbeddedPostgres, type EmbeddedDatabase } from "./embedded";
import { DatabaseSetupError, pendingMigrations } from "./migrate";
import { DEFAULT_SERVICE_LOGIN, assertServiceLogin, loginOf, prepareDatabase } from "./roles";

export interface Database {
  /** The service login's URL (what the pool connects with). */
  url: string;
  pool: pg.Pool;
  db: Db;
  embedded: EmbeddedDatabase | null;
  close(): Promise<void>;
}

export class SchemaNotCurrentError extends DatabaseSetupError {
  override name = "SchemaNotCurrentError";
}

/** The embedded server's URL for the service login (tidings_app). */
export function embeddedServiceUrl(port: number): string {
  const u = new URL(embeddedUrl(port));
  u.username = DEFAULT_SERVICE_LOGIN;
  u.password = EMBEDDED_SERVICE_PASSWORD;
  return u.toString();
}

/**
 * Where the service connects, and whether (and as whom) it migrates first:
 * - DATABASE_URL unset: the embedded PostgreSQL under DATA_DIR/pg, migrated
 *   as its superuser, served to the service login tidings_app;
 * - DATABASE_URL and MIGRATION_DATABASE_URL: migrate as the latter (creating
 *   the roles and the service login when it may), then serve as the former;
 * - DATABASE_URL alone: serve as it, once its schema is current (migrated
 *   by `npm run migrate` beforehand).
 * The service login is then checked: not a superuser, not the owner.
 */
export async function openDatabase(config: Config, logger: Logger, applicationName = "tidings"): Promise<Database> {
  let embedded: EmbeddedDatabase | null = null;
  let url = config.DATABASE_URL;
  let migrationUrl = config.MIGRATION_DATABASE_URL;
  if (!url) {
    const dataDir = path.join(config.DATA_DIR, "pg");
    embedded = await startEmbeddedPostgres({ dataDir, port: config.EMBEDDED_PG_PORT, log: (m) => logger.warn(m) });
    url = embeddedServiceUrl(config.EMBEDDED_PG_PORT);
    migrationUrl = embedded.url;
    logger.info({ dataDir: embedded.dataDir, port: config.EMBEDDED_PG_PORT }, `DATABASE_URL is not set: using embedded PostgreSQL with data in ${embedded.dataDir}`);
  }
  let pool: pg.Pool | null = null;
  try {
    if (migrationUrl) {
      await checkConnection(migrationUrl, applicationName);
      const applied = await prepareDatabase(migrationUrl, {
        serviceLogin: loginOf(url),
        log: (m) => (m.startsWith("warning:") ? logger.warn(m.slice(9)) : logger.info(m)),
        applicationName: `${applicationName}-migrate`,
      });
      if (applied.length === 0) logger.debug("database schema is current");
    }
    await checkConnection(url, applicationName);
    pool = createPool(url, config.DB_POOL_SIZE, applicationName);
    await assertServiceLogin(pool);
    const pending = await pendingMigrations(pool);
    if (pending.length > 0) {
      throw new SchemaNotCurrentError(
        `the database schema is not current (${pending.join("; ")}): run npm run migrate with MIGRATION_DATABASE_URL set to a login that may migrate (docs/security.md)`,
      );
    }
  } catch (error) {
    await pool?.end();
    await embedded?.stop();
    throw error;
  }
  const db = createDb(pool);
  const opened = pool;
  return {
    url,
    pool: opened,
    db,
    embedded,
    async close() {
      // Kysely ends the pool only if a query went through it.
      await db.destroy();
      if (!opened.ended) await opened.end();
      await embedded?.stop();
    },
  };
}

/** Node's reason for a failed connect: an AggregateError (IPv6 and IPv4 both tried) has no message of its own. */
function connectFailure(error: unknown): string {
  if (error instanceof AggregateError && error.errors.length > 0) {
    return [...new Set(error.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))))].join("; ");
  }
  return error instanceof Error && error.message ? error.message : String(error);
}

/** SQLSTATEs that no retry will cure: wrong password or user (class 28), no such database. */
const PERMANENT_CONNECT_CODES = /^(28...|3D000)$/;

/**
 * Connect once before anything else, with a bounded wait, so that a
 * database that is down, unreachable or refusing the login stops the start
 * with one line naming it (credentials hidden) instead of a stack trace
 * from deep inside the migrations.
 */
async function checkConnection(url: string, applicationName: string): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000, application_name: applicationName });
  client.on("error", () => {});
  try {
    await client.connect();
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new ExternalError(
      `cannot connect to the database at ${redactUrl(url)}: ${connectFailure(error)}`,
      !(typeof code === "string" && PERMANENT_CONNECT_CODES.test(code)),
      { code: typeof code === "string" ? code : null },
      undefined,
      { cause: error },
    );
  } finally {
    await client.end().catch(() => {});
  }
}

async function answers(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1500 });
  try {
    await client.connect();
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * For command-line tools: DATABASE_URL when set; otherwise the embedded
 * database of a running `npm start` (a second server cannot start on the same
 * data), as the service login, or, when none runs, the embedded database
 * started for this command.
 */
export async function openDatabaseForTool(config: Config, logger: Logger, applicationName: string): Promise<Database> {
  if (!config.DATABASE_URL) {
    const url = embeddedServiceUrl(config.EMBEDDED_PG_PORT);
    if (await answers(url)) return openDatabase({ ...config, DATABASE_URL: url, MIGRATION_DATABASE_URL: undefined }, logger, applicationName);
  }
  return openDatabase(config, logger, applicationName);
}
