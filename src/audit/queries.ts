import { sql, type RawBuilder } from "kysely";
import { z } from "zod";
import { inTransaction, type Db, type Tx } from "../db/database";
import { ValidationError } from "../errors/errors";

/**
 * Typed questions over the audit views (migrations/0003_api_and_audit.sql,
 * docs/audit.md), shared by the `audit` command and the tests. Every function
 * takes an AuditorTx, which only `asAuditor` hands out: the queries run as
 * tidings_auditor in a read-only transaction, so they see exactly what the
 * auditor role sees and can change nothing.
 *
 * Rows keep the views' column names (snake_case), so the JSON the command
 * prints reads like the SQL in docs/audit.md.
 */

declare const auditorBrand: unique symbol;
/** A read-only transaction acting as tidings_auditor. */
export type AuditorTx = Tx & { readonly [auditorBrand]: true };

/** Run `fn` as the auditor: SET LOCAL ROLE tidings_auditor, read only. */
export async function asAuditor<T>(db: Db, fn: (tx: AuditorTx) => Promise<T>): Promise<T> {
  return inTransaction(db, "auditor", async (tx) => {
    await sql`set transaction read only`.execute(tx);
    return fn(tx as AuditorTx);
  });
}

// --- Rows --------------------------------------------------------------------

export const EMAIL_STATUSES = ["pending", "sending", "sent", "failed"] as const;
export type DeliveryStatus = (typeof EMAIL_STATUSES)[number];

/** What audit.emails and audit.slack_messages both say of an operation. */
interface AuditOperation {
  notification_id: string;
  operation_id: string;
  purpose: "notification" | "internal_alert";
  entity_id: string | null;
  status: DeliveryStatus;
  handling_status: string;
  attempts: number;
  requested_at: Date;
  sent_at: Date | null;
  failed_at: Date | null;
  last_error: string | null;
  tags: Record<string, string>;
  operation_position: number;
}

export interface AuditEmail extends AuditOperation {
  recipient: string;
  recipients: string[];
  subject: string;
  smtp_code: number | null;
  response: string | null;
  message_id: string;
}

export interface AuditSlackMessage extends AuditOperation {
  channel: string;
  text: string;
  posted_channel: string | null;
  ts: string | null;
  slack_error: string | null;
  http_status: number | null;
}

export const NOTIFICATION_STATUSES = ["pending", "requested", "sending", "sent", "partially_sent", "failed", "not_sent"] as const;

export interface AuditNotification {
  tracking_id: string;
  entity_id: string;
  subject: string;
  tags: Record<string, string>;
  requested_at: Date;
  channels_requested: string[] | null;
  idempotency_key: string | null;
  status: (typeof NOTIFICATION_STATUSES)[number];
  outcome_type: string | null;
  outcome_at: Date | null;
  timed_out: boolean | null;
  sent_channels: string[] | null;
  failed_channels: string[] | null;
  failure_reason: string | null;
  internal_team_alerted: boolean;
  alerted_at: Date | null;
  client_operation_position: number;
}

export interface AuditHandlingChange {
  stream: string;
  position: number;
  record_id: string | null;
  record_type: string | null;
  concern: string;
  from_status: string;
  to_status: string;
  action: string;
  actor: string;
  reason: string | null;
  details: unknown;
  attempt: number;
  at: Date;
  database_role: string;
  entry: number;
}

export interface AuditFailure {
  stream: string;
  position: number;
  record_id: string | null;
  record_type: string | null;
  concern: string;
  error: string | null;
  attempts: number;
  failed_since: Date;
  reason: string | null;
  last_actor: string;
  details: unknown;
  record_recorded_at: Date | null;
}

export interface AuditEntityVersion {
  entity_id: string;
  /** The entity's own version (1, 2, ...), as the API answers it. */
  version: number;
  /** Position in entity.events (what notifications record as entityVersion). */
  position: number;
  change_type: string;
  removed: boolean;
  valid_from: Date;
  valid_to: Date | null;
  kind: string | null;
  name: string | null;
  email: string | null;
  slack: string | null;
  preferences: unknown;
  channels: string[];
  opted_out: string[];
  delivery: string | null;
  changed: string[];
  changed_by: string;
}

export interface AuditRedrive {
  at: Date;
  actor: string;
  action: string;
  stream: string;
  position: number | null;
  record_id: string | null;
  record_type: string | null;
  concern: string;
  from_status: string | null;
  to_status: string | null;
  reason: string;
  details: unknown;
  database_role: string | null;
}

export interface AuditRecord {
  stream: string;
  position: number;
  record_id: string;
  record_type: string;
  tags: Record<string, string>;
  caused_by_stream: string | null;
  caused_by_position: number | null;
  recorded_at: Date;
  recorded_by: string;
}

// --- Input -------------------------------------------------------------------

const ISO_DATE = /^(\d{4})-(\d{2})-(\d{2})$/;
const ISO_DATE_TIME = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}(:?\d{2})?)?$/i;

/**
 * An ISO 8601 instant: a date-time (with an offset, or else in this
 * machine's time zone) or a date alone (local midnight).
 */
export const instant = z.union([z.date(), z.string()]).transform((value, ctx) => {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) ctx.addIssue({ code: "custom", message: "is not a valid date" });
    return value;
  }
  const text = value.trim();
  const dateOnly = ISO_DATE.exec(text);
  const parsed = dateOnly
    ? new Date(Number(dateOnly[1]), Number(dateOnly[2]) - 1, Number(dateOnly[3]))
    : ISO_DATE_TIME.test(text)
      ? new Date(text.replace(" ", "T"))
      : new Date(Number.NaN);
  if (Number.isNaN(parsed.getTime())) {
    ctx.addIssue({ code: "custom", message: `"${value}" is not an ISO 8601 date or date-time (e.g. 2026-11-26T14:02:00Z)` });
    return z.NEVER;
  }
  return parsed;
});

const limit = z.coerce.number().int("must be a whole number").min(1, "must be at least 1").max(10_000, "must be at most 10000").default(100);
const text = (max: number) => z.string().trim().min(1, "must not be empty").max(max, `must be at most ${max} characters`);

const period = {
  since: instant.optional(),
  until: instant.optional(),
};

function checkPeriod<T extends { since?: Date; until?: Date }>(value: T, ctx: z.RefinementCtx) {
  if (value.since && value.until && value.until <= value.since) {
    ctx.addIssue({ code: "custom", path: ["until"], message: "must be later than since" });
  }
}

export const EmailFilter = z.strictObject({ to: text(320), ...period, status: z.enum(EMAIL_STATUSES).optional(), limit }).superRefine(checkPeriod);
export type EmailFilter = z.input<typeof EmailFilter>;

export const SlackFilter = z.strictObject({ channel: text(100), ...period, status: z.enum(EMAIL_STATUSES).optional(), limit }).superRefine(checkPeriod);
export type SlackFilter = z.input<typeof SlackFilter>;

export const NotificationFilter = z.strictObject({ entityId: text(200).optional(), ...period, status: z.enum(NOTIFICATION_STATUSES).optional(), limit }).superRefine(checkPeriod);
export type NotificationFilter = z.input<typeof NotificationFilter>;

export const FailureFilter = z.strictObject({ stream: text(200).optional(), concern: text(100).optional(), limit });
export type FailureFilter = z.input<typeof FailureFilter>;

export const RedriveFilter = z.strictObject({ actor: text(200).optional(), ...period, limit }).superRefine(checkPeriod);
export type RedriveFilter = z.input<typeof RedriveFilter>;

const trackingId = text(200);
const entityId = text(200);

/** Parse input; a problem becomes a ValidationError naming each field. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((i) => ({ path: i.path.join(".") || "(input)", message: i.message }));
  throw new ValidationError(`invalid ${what}: ${issues.map((i) => `${i.path} ${i.message}`).join("; ")}`, issues);
}

function where(conditions: RawBuilder<unknown>[]): RawBuilder<unknown> {
  return conditions.length === 0 ? sql`` : sql`where ${sql.join(conditions, sql` and `)}`;
}

/** The filters every "what was sent" question shares: requested in [since, until), with this status. */
function requestedWhen(f: { since?: string | Date | undefined; until?: string | Date | undefined; status?: string | undefined }): RawBuilder<unknown>[] {
  const conditions: RawBuilder<unknown>[] = [];
  if (f.since) conditions.push(sql`requested_at >= ${f.since}`);
  if (f.until) conditions.push(sql`requested_at < ${f.until}`);
  if (f.status) conditions.push(sql`status = ${f.status}`);
  return conditions;
}

// --- Questions ---------------------------------------------------------------

/** Operations of one channel's audit view to one destination, newest first. */
async function sentTo<Row>(
  tx: AuditorTx,
  view: "audit.emails" | "audit.slack_messages",
  destination: RawBuilder<unknown>,
  f: Parameters<typeof requestedWhen>[0] & { limit: number },
) {
  const { rows } = await sql<Row>`
    select * from ${sql.table(view)} ${where([destination, ...requestedWhen(f)])}
    order by requested_at desc, operation_position desc limit ${f.limit}`.execute(tx);
  return rows;
}

/** Emails to one address (the first To address, exactly as stored), newest first. */
export async function findEmails(tx: AuditorTx, input: EmailFilter): Promise<AuditEmail[]> {
  const f = parseInput(EmailFilter, input, "email filter");
  return sentTo<AuditEmail>(tx, "audit.emails", sql`recipient = ${f.to}`, f);
}

/** Slack messages to one destination as it was asked for (#name or id), newest first. */
export async function findSlackMessages(tx: AuditorTx, input: SlackFilter): Promise<AuditSlackMessage[]> {
  const f = parseInput(SlackFilter, input, "Slack filter");
  return sentTo<AuditSlackMessage>(tx, "audit.slack_messages", sql`channel = ${f.channel}`, f);
}

/** Notifications, optionally of one entity, newest first. */
export async function findNotifications(tx: AuditorTx, input: NotificationFilter = {}): Promise<AuditNotification[]> {
  const f = parseInput(NotificationFilter, input, "notification filter");
  const conditions = [...(f.entityId ? [sql`entity_id = ${f.entityId}`] : []), ...requestedWhen(f)];
  const { rows } = await sql<AuditNotification>`
    select * from audit.notifications ${where(conditions)}
    order by requested_at desc, client_operation_position desc limit ${f.limit}`.execute(tx);
  return rows;
}

export interface NotificationDetail {
  notification: AuditNotification;
  emails: AuditEmail[];
  slackMessages: AuditSlackMessage[];
  /** Every record written about it, in time order, across every stream. */
  records: AuditRecord[];
  /** Every handling change of those records, in time order. */
  handlingChanges: AuditHandlingChange[];
}

/** Everything about one notification; null when no notification has this tracking id. */
export async function getNotificationDetail(tx: AuditorTx, id: string): Promise<NotificationDetail | null> {
  const tracking = parseInput(trackingId, id, "tracking id");
  const { rows } = await sql<AuditNotification>`select * from audit.notifications where tracking_id = ${tracking}`.execute(tx);
  const notification = rows[0];
  if (!notification) return null;
  const emails = await sql<AuditEmail>`
    select * from audit.emails where notification_id = ${tracking} order by operation_position`.execute(tx);
  const slackMessages = await sql<AuditSlackMessage>`
    select * from audit.slack_messages where notification_id = ${tracking} order by operation_position`.execute(tx);
  const records = await sql<AuditRecord>`
    select * from audit.records where record_id = ${tracking} order by recorded_at, stream, position`.execute(tx);
  const handlingChanges = await sql<AuditHandlingChange>`
    select * from audit.handling_changes where record_id = ${tracking} order by at, stream, entry`.execute(tx);
  return {
    notification,
    emails: emails.rows,
    slackMessages: slackMessages.rows,
    records: records.rows,
    handlingChanges: handlingChanges.rows,
  };
}

/** What waits for an operator: every Failed record, oldest failure first. */
export async function listFailuresWaiting(tx: AuditorTx, input: FailureFilter = {}): Promise<AuditFailure[]> {
  const f = parseInput(FailureFilter, input, "failure filter");
  const conditions: RawBuilder<unknown>[] = [];
  if (f.stream) conditions.push(sql`stream = ${f.stream}`);
  if (f.concern) conditions.push(sql`concern = ${f.concern}`);
  const { rows } = await sql<AuditFailure>`
    select * from audit.failures_waiting ${where(conditions)}
    order by failed_since, stream, position limit ${f.limit}`.execute(tx);
  return rows;
}

/**
 * An entity's versions, oldest first; with `at`, only the version in force
 * at that instant (none before the entity existed).
 */
export async function getEntityVersions(tx: AuditorTx, id: string, at?: Date | string): Promise<AuditEntityVersion[]> {
  const entity = parseInput(entityId, id, "entity id");
  const when = at === undefined ? undefined : parseInput(instant, at, "instant (--at)");
  const asOf = when ? sql`and valid_from <= ${when} and (valid_to is null or valid_to > ${when})` : sql``;
  const { rows } = await sql<AuditEntityVersion>`
    select * from audit.entity_versions where entity_id = ${entity} ${asOf} order by version`.execute(tx);
  return rows;
}

/** Changes people made (re-drives, cancels, archives, disables), newest first. */
export async function listRedrives(tx: AuditorTx, input: RedriveFilter = {}): Promise<AuditRedrive[]> {
  const f = parseInput(RedriveFilter, input, "re-drive filter");
  const conditions: RawBuilder<unknown>[] = [];
  if (f.actor) conditions.push(sql`actor = ${f.actor}`);
  if (f.since) conditions.push(sql`at >= ${f.since}`);
  if (f.until) conditions.push(sql`at < ${f.until}`);
  const { rows } = await sql<AuditRedrive>`
    select * from audit.redrives ${where(conditions)} order by at desc limit ${f.limit}`.execute(tx);
  return rows;
}
