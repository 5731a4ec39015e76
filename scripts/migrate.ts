import "dotenv/config";
import { ConfigError, loadConfig } from "../src/config/config";
import { openDatabase } from "../src/db/connect";
import { createLogger } from "../src/logging/logger";

/** `npm run migrate`: apply pending migrations (to DATABASE_URL, or the embedded database) and exit. */
async function main() {
  const config = loadConfig();
  const logger = createLogger(config.LOG_LEVEL, "tidings-migrate");
  const database = await openDatabase(config, logger, "tidings-migrate");
  logger.info("migrations are current");
  await database.close();
}

main().catch((error) => {
  process.stderr.write(`${error instanceof ConfigError ? error.message : (error as Error).stack}\n`);
  process.exit(error instanceof ConfigError ? 2 : 1);
});
