import path from "node:path";
import type { Config } from "../config/config";
import type { Logger } from "../logging/logger";
import { createDb, createPool, type Db } from "./database";
import pg from "pg";
import { embeddedUrl, startEmbeddedPostgres, type EmbeddedDatabase } from "./embedded";
import { migrate } from "./migrate";

export interface Database {
  url: string;
  pool: pg.Pool;
  db: Db;
  embedded: EmbeddedDatabase | null;
  close(): Promise<void>;
}

/** DATABASE_URL when set; otherwise the embedded PostgreSQL under DATA_DIR/pg. Migrations applied either way. */
export async function openDatabase(config: Config, logger: Logger, applicationName = "tidings"): Promise<Database> {
  let embedded: EmbeddedDatabase | null = null;
  let url = config.DATABASE_URL;
  if (!url) {
    const dataDir = path.join(config.DATA_DIR, "pg");
    embedded = await startEmbeddedPostgres({
      dataDir,
      port: config.EMBEDDED_PG_PORT,
      log: (m) => logger.warn(m),
    });
    url = embedded.url;
    logger.info(
      { dataDir: embedded.dataDir, port: config.EMBEDDED_PG_PORT },
      `DATABASE_URL is not set: using embedded PostgreSQL with data in ${embedded.dataDir}`,
    );
  }
  const pool = createPool(url, config.DB_POOL_SIZE, applicationName);
  try {
    const applied = await migrate(pool, (m) => logger.info(m));
    if (applied.length === 0) logger.debug("database schema is current");
  } catch (error) {
    await pool.end();
    await embedded?.stop();
    throw error;
  }
  const db = createDb(pool);
  return {
    url,
    pool,
    db,
    embedded,
    async close() {
      // Kysely ends the pool only if a query went through it.
      await db.destroy();
      if (!pool.ended) await pool.end();
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
 * data), or, when none runs, the embedded database started for this command.
 */
export async function openDatabaseForTool(config: Config, logger: Logger, applicationName: string): Promise<Database> {
  if (!config.DATABASE_URL) {
    const url = embeddedUrl(config.EMBEDDED_PG_PORT);
    if (await answers(url)) return openDatabase({ ...config, DATABASE_URL: url }, logger, applicationName);
  }
  return openDatabase(config, logger, applicationName);
}
