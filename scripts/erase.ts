import "dotenv/config";
import { Command } from "commander";
import { reportToolError } from "./toolErrors";
import { eraseEntity } from "../src/admin/erasure/erase";
import { formatErasure } from "../src/admin/erasure/format";
import { loadConfig } from "../src/config/config";
import { openDatabaseForTool, type Database } from "../src/db/connect";
import { createToolLogger } from "../src/logging/logger";

/**
 * `npm run erase -- --entity <id>`: erase one entity's personal data. A thin
 * command line over src/admin/erasure/erase.ts; see docs/security.md,
 * "Erasure". Dry run unless --execute --reason "<why>".
 */

interface Options {
  entity: string;
  execute?: boolean;
  reason?: string;
  actor?: string;
  json?: boolean;
}

async function run(o: Options): Promise<void> {
  let database: Database | null = null;
  try {
    const config = loadConfig();
    // Logs go to stderr so stdout stays the report (and valid JSON with --json).
    const logger = createToolLogger("tidings-erase", process.env.LOG_LEVEL ? config.LOG_LEVEL : "warn");
    try {
      database = await openDatabaseForTool({ ...config, DB_POOL_SIZE: 2 }, logger, "tidings-erase");
    } catch (error) {
      process.stderr.write(`erase: cannot open the database: ${(error as Error)?.message ?? String(error)}\n`);
      process.exitCode = 1;
      return;
    }
    const report = await eraseEntity(database.db, { entityId: o.entity, execute: o.execute, reason: o.reason, actor: o.actor });
    process.stdout.write(o.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatErasure(report)}\n`);
  } catch (error) {
    reportToolError("erase", error, o.json);
  } finally {
    await database?.close();
    if (database && !database.pool.ending) await database.pool.end();
  }
}

new Command("erase")
  .description(
    "Erase one entity's personal data (names, email addresses, Slack destinations, the subjects and bodies of its notifications)\n" +
      "from every stream, handling row and history, idempotency key and job, keeping records, times, statuses and counts.\n" +
      "The entity is removed; the erasure is recorded in entity.erasures (who, when, why). Dry run unless --execute --reason.\n" +
      'See docs/security.md, "Erasure".',
  )
  .requiredOption("--entity <id>", "the entity whose personal data to erase")
  .option("--execute", "erase (the default is a dry run that lists what would be rewritten, per table)")
  .option("--reason <text>", "why: required with --execute, kept in the erasure record")
  .option("--actor <name>", "who erases (default: the OS user, $USER)")
  .option("--json", "machine-readable output: the report as a JSON object")
  .showHelpAfterError()
  .addHelpText("after", '\nExamples:\n  $ npm run erase -- --entity ada\n  $ npm run erase -- --entity ada --execute --reason "erasure request TICKET-42"\n')
  .action(run)
  .parseAsync(process.argv)
  .catch((error: unknown) => reportToolError("erase", error, process.argv.includes("--json")));
