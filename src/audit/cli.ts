import { Command, CommanderError, Option } from "commander";
import { createToolLogger } from "../logging/logger";
import { z } from "zod";
import type { Db } from "../db/database";
import { createDb, createPool } from "../db/database";
import { openDatabaseForTool } from "../db/connect";
import { ConfigError, loadConfig } from "../config/config";
import { NotFoundError, ValidationError } from "../errors/errors";
import { outputStyle, type OutputStyle } from "../cli/table";
import { columns, renderRecord, renderTable } from "./format";
import {
  EMAIL_STATUSES,
  EmailFilter,
  FailureFilter,
  NOTIFICATION_STATUSES,
  NotificationFilter,
  RedriveFilter,
  SlackFilter,
  asAuditor,
  findEmails,
  findNotifications,
  findSlackMessages,
  getEntityVersions,
  getNotificationDetail,
  instant,
  listFailuresWaiting,
  listRedrives,
  parseInput,
  type AuditEmail,
  type AuditEntityVersion,
  type AuditFailure,
  type AuditHandlingChange,
  type AuditNotification,
  type AuditRecord,
  type AuditRedrive,
  type AuditSlackMessage,
  type AuditorTx,
} from "./queries";

/**
 * `npm run audit -- <command>`: the audit views for people who do not write
 * SQL. Every query runs as tidings_auditor (read only), so the command shows
 * what the auditor role may see and nothing else.
 */

export interface Output {
  out(text: string): void;
  err(text: string): void;
  /** How tables are laid out for people (src/cli/table.ts); default: as stdout is (a terminal's width and colour, or neither). */
  style?: OutputStyle;
}

export interface Connection {
  db: Db;
  close(): Promise<void>;
}

/** Exit codes: 0 done, 1 failed (not found, database error), 2 bad usage or input. */
export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/**
 * DATABASE_URL as given: no migrations, because the login may be an
 * auditor's that can change nothing. Without it, the embedded database of
 * `npm start` (migrated like at start).
 */
export async function connectFromEnvironment(env: NodeJS.ProcessEnv = process.env): Promise<Connection> {
  const config = loadConfig(env);
  if (config.DATABASE_URL) {
    const db = createDb(createPool(config.DATABASE_URL, 2, "tidings-audit"));
    return { db, close: () => db.destroy() };
  }
  // Logs go to stderr so that --json output on stdout stays parseable.
  const logger = createToolLogger("tidings-audit", env.LOG_LEVEL ? config.LOG_LEVEL : "warn");
  const database = await openDatabaseForTool({ ...config, DB_POOL_SIZE: 2 }, logger, "tidings-audit");
  return { db: database.db, close: () => database.close() };
}

/** Option names as the user typed them, for error messages. */
const OPTION_NAMES: Record<string, string> = { entityId: "--entity" };

function describeValidation(error: ValidationError): string {
  if (error.issues.length === 0) return error.message;
  return error.issues
    .map((i) => {
      const name = i.path === "(input)" ? "" : `${OPTION_NAMES[i.path] ?? `--${i.path}`} `;
      return `${name}${i.message}`;
    })
    .join("; ");
}

const EMAIL_COLUMNS = columns<AuditEmail>("requested_at", "notification_id", "purpose", "recipient", "subject", "status", "attempts", "sent_at", "smtp_code", "last_error");
const SLACK_COLUMNS = columns<AuditSlackMessage>("requested_at", "notification_id", "purpose", "channel", "status", "attempts", "sent_at", "ts", "slack_error", "last_error");
const NOTIFICATION_COLUMNS = columns<AuditNotification>(
  "requested_at",
  "tracking_id",
  "entity_id",
  "subject",
  "status",
  "outcome_at",
  "failed_channels",
  "failure_reason",
  "internal_team_alerted",
);
const RECORD_COLUMNS = columns<AuditRecord>("recorded_at", "stream", "position", "record_type", "recorded_by");
const CHANGE_COLUMNS = columns<AuditHandlingChange>("at", "stream", "position", "concern", "action", "from_status", "to_status", "actor", "attempt", "reason");
const FAILURE_COLUMNS = columns<AuditFailure>("failed_since", "stream", "position", "record_id", "concern", "attempts", "error");
const ENTITY_COLUMNS = columns<AuditEntityVersion>("version", "valid_from", "valid_to", "removed", "email", "slack", "channels", "opted_out", "delivery", "changed", "changed_by");
const REDRIVE_COLUMNS = columns<AuditRedrive>("at", "actor", "action", "stream", "position", "record_id", "concern", "from_status", "to_status", "reason");

interface Common {
  json?: boolean;
}

/**
 * The program. `connect` is called once per command run, so `--help` and
 * bad options never touch the database.
 */
export function buildAuditProgram(io: Output, connect: () => Promise<Connection> = () => connectFromEnvironment()): Command {
  const program = new Command("audit")
    .description(
      "Answers what tidings did: emails, Slack messages, notifications, failures, entity versions, re-drives.\n" +
        "Reads the audit views as the tidings_auditor role (see docs/audit.md). Connects with DATABASE_URL, or the embedded database.",
    )
    .configureOutput({ writeOut: (s) => io.out(s.replace(/\n$/, "")), writeErr: (s) => io.err(s.replace(/\n$/, "")) })
    .exitOverride()
    .showHelpAfterError("(add --help for usage)");
  const style = io.style ?? outputStyle();

  async function run<T>(opts: Common, query: (tx: AuditorTx) => Promise<T>, render: (result: T) => string): Promise<void> {
    const connection = await connect();
    try {
      const result = await asAuditor(connection.db, query);
      io.out(opts.json ? JSON.stringify(result, null, 2) : render(result));
    } finally {
      await connection.close();
    }
  }

  const withJson = (command: Command) => command.addOption(new Option("--json", "print JSON instead of a table (a listing: an array of its rows)"));
  const period = (command: Command, what: string) =>
    command
      .option("--since <ISO>", `only ${what} at or after this instant (e.g. 2026-11-26 or 2026-11-26T14:02:00Z; no offset: local time)`)
      .option("--until <ISO>", `only ${what} before this instant`);
  const limitOption = (command: Command) => command.option("--limit <n>", "at most this many rows (1-10000)", "100");

  withJson(
    limitOption(
      period(
        program
          .command("emails")
          .description("Emails to one address (the first To address), newest first.")
          .requiredOption("--to <address>", "the recipient address, exactly as stored")
          .addOption(new Option("--status <status>", "only emails with this status").choices([...EMAIL_STATUSES])),
        "emails requested",
      ),
    ),
  ).action(async (opts: Common & { to: string; since?: string; until?: string; status?: string; limit: string }) => {
    const filter = parseInput(EmailFilter, { to: opts.to, since: opts.since, until: opts.until, status: opts.status, limit: opts.limit }, "options");
    await run(
      opts,
      (tx) => findEmails(tx, filter),
      (rows) => renderTable(rows, EMAIL_COLUMNS, style),
    );
  });

  withJson(
    limitOption(
      period(
        program
          .command("slack")
          .description("Slack messages to one destination (#channel-name or a channel/user id, as asked for), newest first.")
          .requiredOption("--channel <channel>", "the destination, exactly as stored")
          .addOption(new Option("--status <status>", "only messages with this status").choices([...EMAIL_STATUSES])),
        "messages requested",
      ),
    ),
  ).action(async (opts: Common & { channel: string; since?: string; until?: string; status?: string; limit: string }) => {
    const filter = parseInput(SlackFilter, { channel: opts.channel, since: opts.since, until: opts.until, status: opts.status, limit: opts.limit }, "options");
    await run(
      opts,
      (tx) => findSlackMessages(tx, filter),
      (rows) => renderTable(rows, SLACK_COLUMNS, style),
    );
  });

  withJson(
    limitOption(
      period(
        program
          .command("notifications")
          .description("Notifications, newest first; optionally of one entity or with one status.")
          .option("--entity <id>", "only notifications to this entity")
          .addOption(new Option("--status <status>", "only notifications with this status").choices([...NOTIFICATION_STATUSES])),
        "notifications requested",
      ),
    ),
  ).action(async (opts: Common & { entity?: string; since?: string; until?: string; status?: string; limit: string }) => {
    const filter = parseInput(NotificationFilter, { entityId: opts.entity, since: opts.since, until: opts.until, status: opts.status, limit: opts.limit }, "options");
    await run(
      opts,
      (tx) => findNotifications(tx, filter),
      (rows) => renderTable(rows, NOTIFICATION_COLUMNS, style),
    );
  });

  withJson(
    program
      .command("notification")
      .description("Everything about one notification: its outcome, emails, Slack messages, records and handling changes.")
      .argument("<tracking-id>", "the tracking id returned when it was enqueued"),
  ).action(async (id: string, opts: Common) => {
    await run(
      opts,
      async (tx) => {
        const detail = await getNotificationDetail(tx, id);
        if (!detail) throw new NotFoundError(`no notification has tracking id "${id}"`);
        return detail;
      },
      (d) =>
        [
          "Notification",
          renderRecord(d.notification, style),
          "",
          "Emails",
          renderTable(d.emails, EMAIL_COLUMNS, style),
          "",
          "Slack messages",
          renderTable(d.slackMessages, SLACK_COLUMNS, style),
          "",
          "Records",
          renderTable(d.records, RECORD_COLUMNS, style),
          "",
          "Handling changes",
          renderTable(d.handlingChanges, CHANGE_COLUMNS, style),
        ].join("\n"),
    );
  });

  withJson(
    limitOption(
      program
        .command("failures")
        .description("What waits for an operator: every record whose handling is Failed, oldest first.")
        .option("--stream <stream>", "only this stream (e.g. email.operations)")
        .option("--concern <concern>", "only this concern (e.g. email_bot)"),
    ),
  ).action(async (opts: Common & { stream?: string; concern?: string; limit: string }) => {
    const filter = parseInput(FailureFilter, { stream: opts.stream, concern: opts.concern, limit: opts.limit }, "options");
    await run(
      opts,
      (tx) => listFailuresWaiting(tx, filter),
      (rows) => renderTable(rows, FAILURE_COLUMNS, style),
    );
  });

  withJson(
    program
      .command("entity")
      .description("An entity's versions and what each allowed; with --at, the version in force at that instant.")
      .argument("<entity-id>", "the entity's id")
      .option("--at <ISO>", "the instant to ask about (e.g. 2026-11-26T14:02:00Z; no offset: local time)"),
  ).action(async (id: string, opts: Common & { at?: string }) => {
    const at = opts.at === undefined ? undefined : parseInput(z.strictObject({ at: instant }), { at: opts.at }, "options").at;
    await run(
      opts,
      (tx) => getEntityVersions(tx, id, at),
      (rows) => renderTable(rows, ENTITY_COLUMNS, style),
    );
  });

  withJson(
    limitOption(
      period(
        program
          .command("redrives")
          .description("Handling changes made by people (re-drives, cancels, archives, disables) with who and why, newest first.")
          .option("--actor <name>", "only changes by this person"),
        "changes made",
      ),
    ),
  ).action(async (opts: Common & { actor?: string; since?: string; until?: string; limit: string }) => {
    const filter = parseInput(RedriveFilter, { actor: opts.actor, since: opts.since, until: opts.until, limit: opts.limit }, "options");
    await run(
      opts,
      (tx) => listRedrives(tx, filter),
      (rows) => renderTable(rows, REDRIVE_COLUMNS, style),
    );
  });

  return program;
}

/** Run the command line; resolves to the process exit code. */
export async function runAudit(argv: readonly string[], io: Output, connect?: () => Promise<Connection>): Promise<number> {
  const program = buildAuditProgram(io, connect);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return EXIT.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      return error.exitCode === 0 ? EXIT.ok : EXIT.usage;
    }
    if (error instanceof ValidationError) {
      io.err(`error: ${describeValidation(error)}`);
      return EXIT.usage;
    }
    if (error instanceof ConfigError) {
      io.err(error.message);
      return EXIT.usage;
    }
    if (error instanceof NotFoundError) {
      io.err(`error: ${error.message}`);
      return EXIT.failed;
    }
    const pgError = error as { code?: string; message?: string };
    if (pgError.code === "42501" && /set role/i.test(pgError.message ?? "")) {
      io.err("error: this database user may not act as tidings_auditor; ask an administrator to run: grant tidings_auditor to <your user>");
      return EXIT.failed;
    }
    io.err(`error: ${(error as Error).message ?? String(error)}`);
    return EXIT.failed;
  }
}
