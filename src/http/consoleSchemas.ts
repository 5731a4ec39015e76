import { z } from "zod";
import { Scope } from "../auth/apiKeys";
import { Channel } from "../entities/entity.schemas";
import { NotificationAggregate } from "../notification/aggregate";
import { HANDLING_STATUSES } from "../streams/interfaces";

/**
 * Schemas of the endpoints the operator console (src/console) is built on:
 * ordinary API endpoints with scopes, in /openapi.json like the rest
 * (src/http/consoleOpenapi.ts). Strict, as every request schema of the API.
 */

const isoTime = z.iso
  .datetime({ offset: true, message: "must be an ISO 8601 date-time with a time zone, e.g. 2026-05-01T12:00:00Z" })
  .refine((v) => !v.startsWith("0000"), "must be in year 1 or later");

// --- Who is calling -------------------------------------------------------------

export const WhoAmI = z.object({ name: z.string(), scopes: z.array(Scope) });

// --- A notification as of a moment ----------------------------------------------

export const AsOfQuery = z.strictObject({
  asOf: isoTime.optional().describe("Answer the notification as it stood then: the nearest snapshot at or before it plus the later events up to it"),
});

export const NotificationAsOf = z.object({
  id: z.uuid(),
  asOf: z.string(),
  aggregate: NotificationAggregate,
  fromSnapshot: z.number().int().nullable().describe("notification.events position the snapshot used was taken at (null: folded from the first event)"),
  eventsApplied: z.number().int().describe("Events folded on top of the snapshot"),
});

// --- The live event stream --------------------------------------------------------

export const EventsStreamQuery = z.strictObject({
  after: z
    .string()
    .max(60)
    .optional()
    .describe("A feed cursor (`<txid>-<position>`) to start after, or `now` for new events only; the Last-Event-ID header, when sent, takes precedence"),
});

// --- Failures waiting and the operator's actions ----------------------------------

const FailedRecord = z.object({
  stream: z.string(),
  position: z.number().int(),
  id: z.string().describe("The record's id: for a notification's records, its tracking id"),
  type: z.string(),
  concern: z.string(),
  status: z.enum(HANDLING_STATUSES),
  attempts: z.number().int(),
  lastError: z.string().nullable(),
  lastActor: z.string().nullable(),
  since: z.string().nullable().describe("When the handling last changed"),
  recordedAt: z.string(),
});

/** A failed or stuck record in GET /v1/admin/failures, with what an operator recognises it by. */
const WaitingRecord = FailedRecord.extend({
  entity: z
    .object({ id: z.string(), name: z.string().nullable() })
    .nullable()
    .describe("The entity the notification is for (from its view); null: not a notification's record, or not projected yet"),
  destination: z.string().nullable().describe("A channel operation's recipient (email address, Slack channel); null for other records"),
  subject: z.string().nullable().describe("A channel operation's subject; null when it has none"),
});

export const FailureGroup = z.object({
  channel: Channel.nullable().describe("The channel whose operations these are (null: a record of another stream)"),
  stream: z.string(),
  concern: z.string(),
  error: z.string().describe("The error shared by the group (its last error, as stored)"),
  count: z.number().int(),
  records: z.array(WaitingRecord),
});

export const FailuresResponse = z.object({
  failed: z.array(FailureGroup).describe("Failed, with no retry to come: grouped by channel (stream and concern) and error, largest group first"),
  running: z.array(WaitingRecord).describe("Running for longer than `stuckAfter`: a worker may have died holding them (cancel-running)"),
  matched: z.object({ failed: z.number().int(), running: z.number().int() }),
  archived: z
    .object({
      days: z.number().int(),
      count: z.number().int().describe("Archived by an operator (archive-failed); failures a resend replaced are not counted here"),
      lastAt: z.string().nullable(),
      resent: z
        .object({ count: z.number().int(), lastAt: z.string().nullable() })
        .describe("Failed operations a resend replaced (archived by the resend, details.verb = resend) in the same days"),
    })
    .describe("Failures operators closed in the last `days` days (audit.redrives): no longer waiting, still in their notifications' stories"),
});

export const FailuresQuery = z.strictObject({
  stuckAfter: z
    .string()
    .regex(/^\d+(ms|s|m|h|d)$/, "must be a duration such as 90s, 10m or 2h")
    .optional()
    .describe("How long a record must have been Running to count as stuck; default 10m"),
});

export const ACTION_VERBS_API = ["redrive-failed", "archive-failed", "cancel-running"] as const;
export const ActionVerbParams = z.strictObject({ verb: z.enum(ACTION_VERBS_API) });

/** Which records an action is about, as `npm run redrive` takes them (src/admin/selection.ts); at least one of them. */
export const ActionBody = z
  .strictObject({
    notification: z.string().min(1).max(200).optional().describe("A tracking id"),
    stream: z.string().min(1).max(200).optional(),
    concern: z.string().min(1).max(100).optional(),
    errorContains: z.string().min(1).max(2000).optional().describe("Case-insensitive substring of the last error"),
    execute: z.boolean().optional().describe("Act; without it (the default) nothing changes and the answer says what would"),
    reason: z.string().max(2000).optional().describe("Why; required with `execute`, kept in the handling history"),
    requeue: z.boolean().optional().describe("cancel-running only: queue the record's handling again"),
  })
  .refine((b) => b.notification !== undefined || b.stream !== undefined || b.concern !== undefined || b.errorContains !== undefined, {
    message: "name the records: at least one of notification, stream, concern, errorContains",
    path: ["notification"],
  });

const PlannedChange = FailedRecord.omit({ since: true, recordedAt: true }).extend({
  to: z.enum(HANDLING_STATUSES),
  requeue: z.boolean(),
  outcome: z.enum(["would change", "changed", "failed"]),
  error: z.string().nullable(),
  details: z.record(z.string(), z.unknown()).nullable().describe("The lineage written with the change (executed only)"),
  failure: z
    .enum(["transient", "permanent"])
    .nullable()
    .describe(
      "redrive-failed's dry run: how the record's last failure was classified (permanent, e.g. a 5.1.1 bounce: re-driving sends the same operation again and will most likely fail the same way; correct the entity and resend instead). null: not known, or not a re-drive's dry run",
    ),
});

export const ActionReportResponse = z.object({
  verb: z.enum(ACTION_VERBS_API),
  dryRun: z.boolean(),
  actor: z.string(),
  reason: z.string().nullable(),
  matched: z.number().int(),
  selected: z.number().int(),
  limited: z.boolean(),
  changed: z.number().int(),
  failed: z.number().int(),
  queued: z.number().int(),
  changes: z.array(PlannedChange),
  warnings: z.array(z.string()),
});

export const ResendBody = z.strictObject({
  notification: z.string().min(1).max(200).describe("The tracking id"),
  channels: z.array(Channel).max(10).optional().describe("The failed channels to resend; default every failed one"),
  execute: z.boolean().optional(),
  reason: z.string().max(2000).optional(),
});

export const ResendReportResponse = z.looseObject({
  verb: z.literal("resend"),
  dryRun: z.boolean(),
  notificationId: z.string(),
  actor: z.string(),
  reason: z.string().nullable(),
  channels: z.array(
    z.looseObject({
      channel: Channel,
      destination: z.string().nullable(),
      skipped: z.string().nullable(),
      previous: z.looseObject({
        destination: z.string(),
        error: z.string().nullable(),
        failure: z
          .enum(["transient", "permanent"])
          .nullable()
          .optional()
          .describe("Dry run: how the failed operation's last failure was classified (permanent: a 5.1.1 bounce); null: not known"),
      }),
      sameDestination: z
        .boolean()
        .optional()
        .describe("Dry run: the entity's current detail is the destination that failed; with a permanent failure, the resend will most likely fail the same way"),
    }),
  ),
  request: z.object({ stream: z.string(), position: z.number().int() }).nullable(),
  warnings: z.array(z.string()),
});

// --- Templates -----------------------------------------------------------------------

export const TemplateListQuery = z.strictObject({
  after: z.string().max(100).optional().describe("`next` of the previous page (the last key it listed); omit for the first page"),
  limit: z
    .string()
    .regex(/^\d{1,9}$/, "must be a whole number from 1 to 500")
    .transform(Number)
    .pipe(z.number().min(1, "must be at least 1").max(500, "must be at most 500"))
    .optional()
    .describe("a whole number from 1 to 500; default 100"),
});

export const TemplateListResponse = z.object({
  items: z
    .array(
      z.object({
        key: z.string(),
        version: z.number().int().describe("The current version"),
        description: z.string().nullable(),
        locales: z.array(z.string()).describe("The locale variants of the current version"),
        updatedAt: z.string().describe("When the current version was recorded"),
        updatedBy: z.string(),
      }),
    )
    .describe("Templates by key"),
  next: z.string().nullable().describe("Give as `after` for the next page; null: this was the last"),
});

// --- Health -------------------------------------------------------------------------

export const HealthResponse = z.object({
  at: z.string(),
  workers: z.array(
    z.object({
      processId: z.string(),
      hostname: z.string(),
      pid: z.number().int(),
      pools: z.number().int(),
      startedAt: z.string(),
      heartbeatAt: z.string(),
      ageSeconds: z.number(),
    }),
  ),
  queue: z.array(z.object({ task: z.string(), now: z.number().int(), later: z.number().int(), running: z.number().int() })),
  lag: z
    .array(z.object({ reader: z.string(), stream: z.string(), waiting: z.number(), oldestSeconds: z.number() }))
    .describe("Catch-up readers (projection, feeds): records not read yet"),
  failedWaiting: z.array(z.object({ stream: z.string(), concern: z.string(), failed: z.number().int() })),
  failuresPerHour: z.array(z.object({ hour: z.string(), failed: z.number().int() })).describe("Failures still waiting for an operator, by the hour they failed (last 24 hours)"),
  streams: z.array(
    z.object({ stream: z.string(), estimatedRows: z.number().nullable().describe("From the catalogue; null until the table is first analysed"), bytes: z.number() }),
  ),
});
