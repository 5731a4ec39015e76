import path from "node:path";
import type { Config } from "../config/config";
import type { Logger } from "../logging/logger";
import { createDb, createPool, type Db } from "./database";
import pg from "pg";
import { EMBEDDED_SERVICE_PASSWORD, embeddedUrl, startEmbeddedPostgres, type EmbeddedDatabase } from "./embedded";
import { pendingMigrations } from "./migrate";
import { DEFAULT_SERVICE_LOGIN, assertServiceLogin, loginOf, prepareDatabase } from "./roles";

export interface Database {
  /** The service login's URL (what the pool connects with). */
  url: string;
  pool: pg.Pool;
  db: Db;
  embedded: EmbeddedDatabase | null;
  close(): Promise<void>;
}

export class SchemaNotCurrentError extends Error {
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
    logger.info(
      { dataDir: embedded.dataDir, port: config.EMBEDDED_PG_PORT },
      `DATABASE_URL is not set: using embedded PostgreSQL with data in ${embedded.dataDir}`,
    );
  }
  let pool: pg.Pool | null = null;
  try {
    if (migrationUrl) {
      const applied = await prepareDatabase(migrationUrl, {
        serviceLogin: loginOf(url),
        log: (m) => (m.startsWith("warning:") ? logger.warn(m.slice(9)) : logger.info(m)),
        applicationName: `${applicationName}-migrate`,
      });
      if (applied.length === 0) logger.debug("database schema is current");
    }
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
