import "dotenv/config";
import { ConfigError, loadConfig } from "../src/config/config";
import { openDatabase } from "../src/db/connect";
import { loginOf, prepareDatabase } from "../src/db/roles";
import { DatabaseSetupError } from "../src/db/migrate";
import { ExternalError } from "../src/errors/errors";
import { redactSecrets } from "../src/logging/redact";
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

main().catch((error) => {
  const oneLine = error instanceof ConfigError || error instanceof DatabaseSetupError || error instanceof ExternalError;
  process.stderr.write(`${redactSecrets(oneLine ? error.message : ((error as Error).stack ?? String(error)))}\n`);
  process.exit(error instanceof ConfigError ? 2 : 1);
});
