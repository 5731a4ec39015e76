import ms from "ms";
import { z } from "zod";
import { asciiDomain, parseSender } from "../util/mailAddress";
import { describeSecret, redactSecrets, redactUrl } from "../logging/redact";

/**
 * Every setting comes from the environment (and `.env`, loaded by the entry
 * points). Validated once at start: a wrong value stops the process with one
 * line naming the variable. `.env.example` documents each one.
 */
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
/** "1m,5m,15m,1h": the delays before each further attempt (the `ms` package's units: ms, s, m, h, d); "none": no retry. */
const schedule = z.string().transform((text, ctx) => {
  if (text.trim() === "none") return [];
  const delays = text.split(",").map((part) => ms(part.trim() as ms.StringValue));
  if (delays.length === 0 || delays.some((d) => typeof d !== "number" || !Number.isFinite(d) || d <= 0)) {
    ctx.addIssue({ code: "custom", message: 'must be delays separated by commas, e.g. "1m,5m,15m,1h" (units ms, s, m, h, d), or "none"' });
    return z.NEVER;
  }
  return delays;
});
const bool = z.enum(["true", "false", "1", "0"]).transform((v) => v === "true" || v === "1");

export const configSchema = z.object({
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "must be a postgres:// connection string")
    .optional(),
  // The login that migrates (a superuser, or a member of tidings_owner); with
  // DATABASE_URL, the service login it creates and grants. docs/security.md.
  MIGRATION_DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "must be a postgres:// connection string")
    .optional(),
  DATA_DIR: z.string().min(1).default(".data"),
  EMBEDDED_PG_PORT: int(1, 65535).default(54329),
  HOST: z.string().min(1).default("127.0.0.1"),
  PORT: int(0, 65535).default(3000),
  // API limits (docs/api.md, "Limits"). Requests per API key per window for keys without a limit of their own; 0: none.
  API_RATE_LIMIT: int(0, 1_000_000_000).default(6_000),
  API_RATE_LIMIT_WINDOW_SECONDS: int(1, 86_400).default(60),
  // Long-polls of GET /v1/events waiting at once, per API key and per process.
  FEED_MAX_WAITS_PER_KEY: int(1, 100_000).default(10),
  FEED_MAX_WAITS: int(1, 1_000_000).default(1_000),
  // The database gauges of /metrics are refreshed at most this often (ms); 0: at every scrape.
  METRICS_REFRESH_MS: int(0, 3_600_000).default(10_000),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  RUN_API: bool.default(true),
  RUN_WORKER: bool.default(true),
  WORKER_CONCURRENCY: int(1, 500).default(64),
  WORKER_POLL_INTERVAL_MS: int(50, 60_000).default(2_000),
  WORKER_LEASE_MS: int(1_000, 86_400_000).default(30_000),
  HANDLING_SWEEP_MS: int(1_000, 86_400_000).default(30_000),
  // At shutdown, how long jobs in flight may finish before sends still going are cut short (left in doubt), ms.
  WORKER_SHUTDOWN_GRACE_MS: int(0, 600_000).default(7_000),
  DB_POOL_SIZE: int(2, 500).default(40),
  BOT_MAX_ATTEMPTS: int(1, 100).default(5),
  BOT_RETRY_BASE_MS: int(1, 3_600_000).default(1_000),
  BOT_RETRY_MAX_MS: int(1, 86_400_000).default(300_000),
  // Retries of transient channel failures, like an MTA: email waits out
  // greylisting (attempts over about 31 hours), Slack retries sooner.
  EMAIL_RETRY_SCHEDULE: schedule.default(["1m", "5m", "15m", "1h", "2h", "4h", "8h", "8h", "8h"].map((d) => ms(d as ms.StringValue))),
  SLACK_RETRY_SCHEDULE: schedule.default(["5s", "30s", "2m", "10m", "30m"].map((d) => ms(d as ms.StringValue))),
  // Channels. Unset SMTP_URL / SLACK_BOT_TOKEN: messages go to local sinks under DATA_DIR/outbox.
  SMTP_URL: z
    .string()
    .regex(/^smtps?:\/\//, "must be an smtp:// or smtps:// URL")
    .optional(),
  // How long a send waits for the SMTP server's next reply before it counts as a transient failure.
  SMTP_SOCKET_TIMEOUT_MS: int(1_000, 3_600_000).default(30_000),
  // At most 320 characters: the From header stays far below SMTP's 998-octet line limit.
  EMAIL_FROM: z
    .string()
    .max(320)
    .superRefine((from, ctx) => {
      const parsed = parseSender(from);
      if ("problem" in parsed) ctx.addIssue({ code: "custom", message: parsed.problem });
    })
    .default("tidings <tidings@localhost>"),
  // Right-hand side of every Message-ID; unset: the domain of EMAIL_FROM.
  EMAIL_MESSAGE_ID_DOMAIN: z
    .string()
    .transform((domain, ctx) => {
      const ascii = asciiDomain(domain);
      if (ascii === null) {
        ctx.addIssue({ code: "custom", message: "must be a domain name, e.g. mail.example.com" });
        return z.NEVER;
      }
      return ascii;
    })
    .optional(),
  SLACK_BOT_TOKEN: z
    .string()
    .regex(/^xox[a-z]-/, "must be a Slack token (xoxb-...)")
    .optional(),
  SLACK_API_URL: z.url().optional(),
  // Without a token: destinations the local sink answers channel_not_found for (comma-separated), to try fallbacks.
  SLACK_SINK_MISSING_CHANNELS: z
    .string()
    .transform((text) =>
      text
        .split(",")
        .map((c) => c.trim())
        .filter((c) => c !== ""),
    )
    .optional(),
  // Who hears about failed notifications.
  // A default that passes the same check as a configured value (an email a channel operation can carry).
  INTERNAL_TEAM_EMAIL: z.email().default("internal-team@tidings.invalid"),
  INTERNAL_TEAM_SLACK_CHANNEL: z.string().optional(),
  ALERT_ON_NOT_SENT: bool.default(false),
  // Notification categories no opt-out stops (comma-separated; docs/templates.md, "Categories").
  CRITICAL_CATEGORIES: z
    .string()
    .regex(/^\s*([a-z][a-z0-9_-]{0,63}\s*(,\s*[a-z][a-z0-9_-]{0,63}\s*)*)?$/, "must be category names separated by commas, e.g. security,billing")
    .transform((text) =>
      text
        .split(",")
        .map((c) => c.trim())
        .filter((c) => c !== ""),
    )
    .default(["security"]),
  DELAYED_ALERT_AFTER_MS: int(1_000, 30 * 86_400_000).optional(),
  // Workflow.
  SAGA_DEADLINE_MS: int(1_000, 7 * 86_400_000).default(15 * 60_000),
  SNAPSHOT_EVERY: int(1, 10_000).default(10),
  // Retention (docs/retention.md): partitions that ended longer ago than this are archived and dropped by `npm run retention`.
  RETENTION_PERIOD: z
    .string()
    .regex(/^([1-9][0-9]{0,4}) ?(day|week|month|year)s?$/, 'must be a number of days, weeks, months or years, e.g. "12 months"')
    .default("12 months"),
  // Where `npm run retention` writes its archives (a folder per run); default DATA_DIR/archive.
  RETENTION_ARCHIVE_DIR: z.string().min(1).optional(),
  // Status webhooks (docs/webhooks.md): retries of a delivery after a 5xx,
  // 408, 429 or a timeout, like Standard Webhooks senders (attempts over
  // about 28 hours); the wait for an answer; the consecutive failed
  // deliveries that disable an endpoint; and whether endpoints may be on
  // loopback or private networks (SSRF: off by default).
  WEBHOOK_RETRY_SCHEDULE: schedule.default(["5s", "5m", "30m", "2h", "5h", "10h", "10h"].map((d) => ms(d as ms.StringValue))),
  WEBHOOK_TIMEOUT_MS: int(100, 120_000).default(10_000),
  WEBHOOK_DISABLE_AFTER: int(1, 1_000).default(5),
  WEBHOOK_ALLOW_PRIVATE_ADDRESSES: bool.default(false),
});

export type Config = z.infer<typeof configSchema>;

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Settings that hold credentials: an error shows them redacted (src/logging/redact.ts), never as given. */
const URL_SETTINGS: ReadonlySet<string> = new Set(["DATABASE_URL", "SMTP_URL", "SLACK_API_URL"]);
const SECRET_SETTINGS: ReadonlySet<string> = new Set(["SLACK_BOT_TOKEN"]);

/** The rejected value as a config error may print it. */
function shownValue(variable: string, value: string): string {
  if (SECRET_SETTINGS.has(variable)) return describeSecret(value);
  return JSON.stringify(URL_SETTINGS.has(variable) ? redactUrl(value) : redactSecrets(value));
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings mean "not set" (a blank line copied from .env.example).
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = configSchema.safeParse(cleaned);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const variable = issue.path.join(".") || "(environment)";
    const got = cleaned[variable];
    throw new ConfigError(`configuration error: ${variable} ${issue.message}${got === undefined ? "" : ` (got ${shownValue(variable, got)})`}`);
  }
  return parsed.data;
}
