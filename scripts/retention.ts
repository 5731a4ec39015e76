import "dotenv/config";
import path from "node:path";
import { Command } from "commander";
import { reportToolError } from "./toolErrors";
import { defaultActor } from "../src/admin/redrive";
import { loadConfig } from "../src/config/config";
import { openDatabaseForTool, type Database } from "../src/db/connect";
import { createToolLogger } from "../src/logging/logger";
import { runRetention, type RetentionReport } from "../src/maintenance/retention";

/**
 * `npm run retention`: archive and drop the partitions of the partitioned
 * streams that ended longer ago than RETENTION_PERIOD, and expire
 * idempotency keys as old. A thin command line over
 * src/maintenance/retention.ts; see docs/retention.md. Dry run unless
 * --execute --reason "<why>". Exit 0: done (or nothing to do); 1: some
 * partitions refused (listed, with the records that hold them); 2: bad
 * input or a refusal of the whole run.
 */

const EXIT_SOME_REFUSED = 1;

interface Options {
  execute?: boolean;
  reason?: string;
  actor?: string;
  period?: string;
  dir?: string;
  json?: boolean;
}

const day = (d: Date) => d.toISOString().slice(0, 10);

function describe(report: RetentionReport): string {
  const lines: string[] = [];
  lines.push(`${report.dryRun ? "dry run: " : ""}retention ${report.period}: partitions that ended before ${report.cutoff.toISOString()} ` + `(${report.candidates.length} found)`);
  for (const c of report.candidates) {
    const archived = report.archived.find((a) => a.partition === c.partition);
    const refused = report.refused.find((r) => r.partition === c.partition);
    const what = archived
      ? `archived to ${archived.file}${archived.handlingFile ? ` (+ ${archived.handlingRows} handling rows)` : ""}, dropped`
      : refused
        ? `REFUSED: ${refused.reason}`
        : report.dryRun
          ? "would be archived and dropped"
          : "not done";
    lines.push(`  ${c.partition}  [${day(c.rangeFrom)}, ${day(c.rangeTo)})  ${c.rows} rows  ${what}`);
    for (const h of refused?.heldRecords ?? []) lines.push(`      ${h.stream} #${h.position} ${h.id}: ${h.why}`);
    if (refused && refused.heldRecords.length > 0 && c.held > refused.heldRecords.length) lines.push(`      ... and ${c.held - refused.heldRecords.length} more`);
  }
  lines.push(`idempotency keys ${report.dryRun ? "that would expire" : "expired"}: ${report.idempotencyKeys}`);
  if (report.directory) lines.push(`archives and manifest.json in ${report.directory}`);
  if (report.dryRun && report.candidates.some((c) => c.held === 0)) lines.push('run again with --execute --reason "<why>" to act');
  return lines.join("\n");
}

async function main(o: Options): Promise<void> {
  const config = loadConfig();
  const logger = createToolLogger("tidings-retention", process.env.LOG_LEVEL ? config.LOG_LEVEL : "warn");
  let database: Database | null = null;
  try {
    database = await openDatabaseForTool({ ...config, DB_POOL_SIZE: 4 }, logger, "tidings-retention");
    const report = await runRetention(database.db, database.pool, {
      period: o.period ?? config.RETENTION_PERIOD,
      archiveDir: o.dir ?? config.RETENTION_ARCHIVE_DIR ?? path.join(config.DATA_DIR, "archive"),
      execute: o.execute ?? false,
      ...(o.reason === undefined ? {} : { reason: o.reason }),
      actor: o.actor ?? defaultActor(),
    });
    process.stdout.write(o.json ? `${JSON.stringify(report, null, 2)}\n` : `${describe(report)}\n`);
    if (report.refused.length > 0) process.exitCode = EXIT_SOME_REFUSED;
  } finally {
    await database?.close();
    // As in scripts/redrive.ts: close() ends the pool only once a query ran through kysely; after an
    // early refusal (no --reason) the idle connections would keep the process alive.
    if (database && !database.pool.ending) await database.pool.end();
  }
}

new Command("retention")
  .description(
    "Archive partitions of the partitioned streams that ended longer ago than the retention period (RETENTION_PERIOD) to gzip'd CSV files,\n" +
      "then detach and drop them, recording the act; expire idempotency keys as old. Partitions holding records a saga or an operator\n" +
      'still waits on are refused, naming the records. A dry run unless --execute --reason "<why>". See docs/retention.md.',
  )
  .option("--execute", "act (the default is a dry run that changes nothing)")
  .option("--reason <text>", "why: required with --execute, recorded with the act")
  .option("--actor <name>", "who acts (default: the OS user, $USER)")
  .option("--period <period>", 'the retention period instead of RETENTION_PERIOD, e.g. "18 months"')
  .option("--dir <path>", "where to write the archives instead of RETENTION_ARCHIVE_DIR (default DATA_DIR/archive)")
  .option("--json", "machine-readable output: the report as a JSON object")
  .showHelpAfterError()
  .action(main)
  .parseAsync(process.argv)
  .catch((error: unknown) => {
    reportToolError("retention", error, process.argv.includes("--json"));
  });
