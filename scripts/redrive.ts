import "dotenv/config";
import { Command } from "commander";
import { reportToolError } from "./toolErrors";
import { formatAction, formatListing, formatResend, formatStuck, formatSwitch } from "../src/admin/format";
import { findStuck, listRecords, resendNotification, runAction, switchStream, type ActionVerb } from "../src/admin/redrive";
import type { SelectionInput, SelectionResult } from "../src/admin/selection";
import { createToolLogger } from "../src/logging/logger";
import { ConfigError, loadConfig } from "../src/config/config";
import { openDatabaseForTool, type Database } from "../src/db/connect";

/**
 * `npm run redrive -- <verb> [filters]`: operators repair handling state.
 * A thin command line over src/admin/redrive.ts (which holds every query);
 * see docs/redrive.md. Dry run unless --execute --reason "<why>".
 */

const EXIT_RECORD_ERRORS = 1;

async function connect(): Promise<Database> {
  const config = loadConfig();
  // Logs go to stderr so stdout stays the report (and valid JSON with --json).
  const logger = createToolLogger("tidings-redrive", process.env.LOG_LEVEL ? config.LOG_LEVEL : "warn");
  return openDatabaseForTool({ ...config, DB_POOL_SIZE: 4 }, logger, "tidings-redrive");
}

interface FilterOptions {
  stream?: string;
  concern?: string;
  status?: string[];
  type?: string[];
  since?: string;
  until?: string;
  recordedSince?: string;
  recordedUntil?: string;
  olderThan?: string;
  errorContains?: string;
  notification?: string;
  entity?: string;
  limit?: string;
  json?: boolean;
}

interface ActOptions extends FilterOptions {
  execute?: boolean;
  reason?: string;
  actor?: string;
  requeue?: boolean;
  iKnowItWasCompleted?: boolean;
  batchSize?: string;
  quiet?: boolean;
}

const list = (value: string, previous: string[] = []) => [
  ...previous,
  ...value
    .split(",")
    .map((v) => v.trim())
    .filter(Boolean),
];

function selectionFrom(o: FilterOptions): SelectionInput {
  return {
    stream: o.stream,
    concern: o.concern,
    status: o.status,
    types: o.type,
    since: o.since,
    until: o.until,
    recordedSince: o.recordedSince,
    recordedUntil: o.recordedUntil,
    olderThan: o.olderThan,
    errorContains: o.errorContains,
    notification: o.notification,
    entity: o.entity,
    limit: o.limit,
  };
}

function addFilters(cmd: Command, { status = true, olderThan = true } = {}): Command {
  cmd.option("--stream <name>", "only this stream (schema.table), e.g. slack.operations").option("--concern <name>", "only this concern, e.g. slack_bot");
  if (status) cmd.option("--status <statuses>", "handling statuses, comma-separated (e.g. Failed,Running), or stuck", list);
  cmd
    .option("--type <type>", "record type, e.g. SendSlackMessageOp (repeat or comma-separate)", list)
    .option("--since <when>", "handling last changed at or after: an ISO date or a duration ago (2h)")
    .option("--until <when>", "handling last changed at or before: an ISO date or a duration ago")
    .option("--recorded-since <when>", "record written at or after: an ISO date or a duration ago")
    .option("--recorded-until <when>", "record written at or before: an ISO date or a duration ago");
  if (olderThan) cmd.option("--older-than <duration>", "handling last changed longer ago than this: 90s, 10m, 2h, 1d");
  return cmd
    .option("--error-contains <text>", "last error contains this text (case-insensitive)")
    .option("--notification <id>", "record id: a notification's tracking id")
    .option("--entity <id>", "records naming this entity (payload entityId, or a notification to it)")
    .option("--limit <n>", "at most this many records")
    .option("--json", "machine-readable output: a listing's rows as a JSON array, an action's report as a JSON object");
}

function addActing(cmd: Command): Command {
  return cmd
    .option("--execute", "act (the default is a dry run that changes nothing)")
    .option("--reason <text>", "why: required with --execute, kept in the handling history")
    .option("--actor <name>", "who acts (default: the OS user, $USER)")
    .option("--batch-size <n>", "records per transaction", "100")
    .option("--quiet", "no progress lines on stderr");
}

function print(json: boolean | undefined, value: unknown, text: string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text}\n`);
}

/** A listing's --json is the array of its rows; that more matched than were shown goes to stderr. */
function printRows(json: boolean | undefined, result: SelectionResult, text: string): void {
  if (json && result.limited) process.stderr.write(`redrive: ${result.records.length} shown of ${result.matched} matching (raise --limit)\n`);
  print(json, result.records, text);
}

async function withDatabase(json: boolean | undefined, fn: (db: Database) => Promise<void>): Promise<void> {
  let database: Database | null = null;
  try {
    try {
      database = await connect();
    } catch (error) {
      if (error instanceof ConfigError) throw error;
      process.stderr.write(`redrive: cannot open the database: ${(error as Error)?.message ?? String(error)}\n`);
      process.exitCode = 1;
      return;
    }
    await fn(database);
  } catch (error) {
    reportToolError("redrive", error, json);
  } finally {
    await database?.close();
    // close() ends the pool through kysely, which only holds it once a query ran through it;
    // after an early refusal the migration's idle connections would keep the process alive.
    if (database && !database.pool.ending) await database.pool.end();
  }
}

const VERB_HELP: Record<ActionVerb, { description: string; examples: string[] }> = {
  "redrive-failed": {
    description: "Failed → AvailableAfterFailure, and queue the handling job again (the next attempt repeats the failed one).",
    examples: [
      "redrive-failed --notification <tracking-id> --concern slack_bot",
      'redrive-failed --concern email_bot --error-contains "451" --since 2h --execute --reason "SMTP relay back up"',
    ],
  },
  "redrive-completed": {
    description: "Completed → AvailableAfterCompletion, and queue the job again: the work is done a second time (an email resent). " + "Executing needs --i-know-it-was-completed.",
    examples: [
      "redrive-completed --stream notification.client_operations --notification <tracking-id>",
      'redrive-completed --notification <tracking-id> --concern email_bot --i-know-it-was-completed --execute --reason "customer lost the email"',
    ],
  },
  "cancel-running": {
    description:
      "Running → AvailableAfterExternalCancellation (a worker died holding the record); --requeue queues the job again. " +
      "Only for records no live worker is handling: see `stuck`.",
    examples: ["cancel-running --older-than 30m", 'cancel-running --concern slack_bot --older-than 1h --requeue --execute --reason "worker host lost"'],
  },
  "archive-failed": {
    description: "Failed → ArchivedAfterFailure: give up on a failure for good (it leaves the list of what waits for an operator).",
    examples: ['archive-failed --concern slack_bot --error-contains channel_not_found --until 7d --execute --reason "channel deleted"'],
  },
};

function examples(lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  $ npm run redrive -- ${l}`).join("\n")}\n`;
}

function actionCommand(program: Command, verb: ActionVerb): void {
  const help = VERB_HELP[verb];
  const cmd = addActing(addFilters(program.command(verb).description(help.description)));
  if (verb === "cancel-running") cmd.option("--requeue", "queue the handling job again after cancelling");
  if (verb === "redrive-completed") cmd.option("--i-know-it-was-completed", "confirm re-driving work that already completed");
  cmd.addHelpText("after", examples(help.examples)).action(async (o: ActOptions) => {
    await withDatabase(o.json, async ({ db }) => {
      const report = await runAction(db, verb, selectionFrom(o), {
        execute: o.execute,
        reason: o.reason,
        actor: o.actor,
        requeue: o.requeue,
        confirmCompleted: o.iKnowItWasCompleted,
        batchSize: Number(o.batchSize),
        onProgress: o.quiet
          ? undefined
          : (p) => {
              process.stderr.write(`progress: ${p.done}/${p.total} (${p.changed} changed, ${p.failed} failed)\n`);
            },
      });
      print(o.json, report, formatAction(report));
      if (report.failed > 0) process.exitCode = EXIT_RECORD_ERRORS;
    });
  });
}

function switchCommand(program: Command, disabled: boolean): void {
  const verb = disabled ? "disable-stream" : "enable-stream";
  program
    .command(verb)
    .description(
      disabled
        ? "Stop claiming a stream's records for a concern (running work may finish; waiting records report DisabledForStream)."
        : "Resume claiming a stream's records for a concern, and queue the records that waited.",
    )
    .requiredOption("--concern <name>", "the concern to switch, e.g. slack_bot")
    .option("--stream <name>", "only this stream (default: every stream the concern consumes)")
    .option("--execute", "act (the default is a dry run)")
    .option("--reason <text>", "why: required with --execute")
    .option("--actor <name>", "who acts (default: the OS user, $USER)")
    .option("--json", "machine-readable output")
    .addHelpText(
      "after",
      examples(
        disabled
          ? ["disable-stream --concern slack_bot", 'disable-stream --concern slack_bot --execute --reason "Slack outage, stop burning attempts"']
          : ['enable-stream --concern slack_bot --execute --reason "Slack is back"'],
      ),
    )
    .action(async (o: { concern: string; stream?: string; execute?: boolean; reason?: string; actor?: string; json?: boolean }) => {
      await withDatabase(o.json, async ({ db }) => {
        const report = await switchStream(db, disabled, { concern: o.concern, stream: o.stream }, o);
        print(o.json, report, formatSwitch(report));
      });
    });
}

function resendCommand(program: Command): void {
  program
    .command("resend")
    .description(
      "Prepare a notification's failed channels again from the entity as it is NOW (a corrected Slack channel or address), " +
        "as new channel operations linked to the failed ones. redrive-failed, by contrast, repeats the failed operation as it was.",
    )
    .requiredOption("--notification <id>", "the notification's tracking id")
    .option("--channel <channel>", "only this failed channel: email or slack (repeat or comma-separate; default: every failed channel)", list)
    .option("--execute", "act (the default is a dry run showing old and new destinations)")
    .option("--reason <text>", "why: required with --execute, kept with the request and in the handling history")
    .option("--actor <name>", "who acts (default: the OS user, $USER)")
    .option("--json", "machine-readable output")
    .addHelpText(
      "after",
      examples(["resend --notification <tracking-id>", 'resend --notification <tracking-id> --channel slack --execute --reason "Slack channel renamed to #new (TICKET-7)"']),
    )
    .action(async (o: { notification: string; channel?: string[]; execute?: boolean; reason?: string; actor?: string; json?: boolean }) => {
      await withDatabase(o.json, async ({ db }) => {
        const report = await resendNotification(db, {
          notificationId: o.notification,
          channels: o.channel,
          execute: o.execute,
          reason: o.reason,
          actor: o.actor,
        });
        print(o.json, report, formatResend(report));
      });
    });
}

function buildProgram(): Command {
  const program = new Command("redrive")
    .description(
      "Repair handling state: re-drive failed records, cancel stuck ones, archive failures, switch streams off and on;\n" +
        "resend a notification's failed channels from the entity as it is now.\n" +
        'Every acting command is a dry run unless given --execute --reason "<why>". See docs/redrive.md.',
    )
    .showHelpAfterError()
    .addHelpText("after", examples(["stuck", "list --notification <tracking-id>", "redrive-failed --notification <tracking-id> --concern slack_bot"]));

  addFilters(program.command("list").description("List records with their handling state (read-only)."))
    .addHelpText("after", examples(["list --notification <tracking-id>", "list --status Failed --concern email_bot --since 1d", "list --entity ada --json"]))
    .action(async (o: FilterOptions) => {
      await withDatabase(o.json, async ({ db }) => {
        const result = await listRecords(db, selectionFrom(o));
        printRows(o.json, result, formatListing(result));
      });
    });

  addFilters(program.command("stuck").description("Running records older than --older-than (default 10m), and Failed records waiting for an operator (read-only)."), {
    status: false,
  })
    .addHelpText("after", examples(["stuck", "stuck --older-than 1h --concern slack_bot --json"]))
    .action(async (o: FilterOptions) => {
      await withDatabase(o.json, async ({ db }) => {
        const report = await findStuck(db, selectionFrom(o));
        // --json: one array, the stuck running records then the failed ones (each row's status tells them apart).
        const rows = {
          records: [...report.running.records, ...report.failed.records],
          limited: report.running.limited || report.failed.limited,
          matched: report.running.matched + report.failed.matched,
        };
        printRows(o.json, rows, formatStuck(report));
      });
    });

  for (const verb of ["redrive-failed", "redrive-completed", "cancel-running", "archive-failed"] as const) actionCommand(program, verb);
  switchCommand(program, true);
  switchCommand(program, false);
  resendCommand(program);
  return program;
}

buildProgram()
  .parseAsync(process.argv)
  .catch((error: unknown) => reportToolError("redrive", error, process.argv.includes("--json")));
