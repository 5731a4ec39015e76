import "dotenv/config";
import { ConfigError, loadConfig } from "../src/config/config";
import { openDatabase } from "../src/db/connect";
import { loginOf, prepareDatabase } from "../src/db/roles";
import { DatabaseSetupError } from "../src/db/migrate";
import { ExternalError } from "../src/errors/errors";
import { redactSecrets, redactUrl } from "../src/logging/redact";
import { createLogger } from "../src/logging/logger";

/**
 * `npm run migrate`: set the roles up and apply pending migrations, then exit.
 * - MIGRATION_DATABASE_URL (a superuser, or a member of tidings_owner)
 *   migrates; with DATABASE_URL too, the service login it names is created
 *   if missing and granted what the service needs.
 * - DATABASE_URL alone: that login migrates (it must be allowed to).
 * - neither: the embedded database under DATA_DIR, as `npm start` does.
 */
async function main() {
  const config = loadConfig();
  const logger = createLogger(config.LOG_LEVEL, "tidings-migrate");
  const log = (m: string) => (m.startsWith("warning:") ? logger.warn(m.slice(9)) : logger.info(m));
  if (config.MIGRATION_DATABASE_URL) {
    await prepareDatabase(config.MIGRATION_DATABASE_URL, {
      log,
      ...(config.DATABASE_URL ? { serviceLogin: loginOf(config.DATABASE_URL) } : {}),
    });
  } else if (config.DATABASE_URL) {
    await prepareDatabase(config.DATABASE_URL, { log });
  } else {
    const database = await openDatabase(config, logger, "tidings-migrate");
    await database.close();
  }
  logger.info("migrations are current");
}

/** The database's own refusals (a missing database, a wrong password: SQLSTATE) and the network's (ECONNREFUSED): no stack to show. */
function isDatabaseRefusal(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && /^([0-9A-Z]{5}|E[A-Z]+)$/.test(code);
}

main().catch((error) => {
  const oneLine = error instanceof ConfigError || error instanceof DatabaseSetupError || error instanceof ExternalError;
  const url = process.env.MIGRATION_DATABASE_URL ?? process.env.DATABASE_URL;
  const message = isDatabaseRefusal(error)
    ? `cannot migrate${url ? ` ${redactUrl(url)}` : ""}: ${(error as Error).message}`
    : oneLine
      ? error.message
      : ((error as Error).stack ?? String(error));
  process.stderr.write(`${redactSecrets(message)}\n`);
  process.exit(error instanceof ConfigError ? 2 : 1);
});
