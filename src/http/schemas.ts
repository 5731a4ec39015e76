import { z } from "zod";
import { Scope } from "../auth/apiKeys";
import { Channel, Entity, EntityInput, entityId } from "../entities/entity.schemas";
import { NotificationAggregate } from "../notification/aggregate";
import { SendNotificationRequest } from "../notification/notification.schemas";
import { HANDLING_STATUSES } from "../streams/interfaces";
import { decodeCursor, type FeedCursor } from "../streams/read";

/**
 * The HTTP API's schemas: request parts are validated with them (all strict:
 * an unknown field or query parameter is refused), and /openapi.json is
 * generated from them (src/http/openapi.ts).
 */

/** A whole number from a query string ("20"), within bounds. */
const intParam = (min: number, max: number, fallback: number) =>
  z
    .string()
    .regex(/^\d{1,9}$/, `must be a whole number from ${min} to ${max}`)
    .transform(Number)
    .pipe(z.number().min(min, `must be at least ${min}`).max(max, `must be at most ${max}`))
    .optional()
    .transform((v) => v ?? fallback)
    .describe(`a whole number from ${min} to ${max}; default ${fallback}`);

const isoTime = z.iso
  .datetime({ offset: true, message: "must be an ISO 8601 date-time with a time zone, e.g. 2026-05-01T12:00:00Z" })
  .refine((v) => !v.startsWith("0000"), "must be in year 1 or later");

// --- Notifications ------------------------------------------------------------

/** POST /v1/notifications body: raw content or a template (the idempotency key is a header); enqueue makes the client operation of it. */
export const SendNotificationBody = SendNotificationRequest;

export const IdempotencyKeyHeader = z
  .string()
  .regex(/^[\x21-\x7e]([\x20-\x7e]{0,253}[\x21-\x7e])?$/, "must be 1 to 255 printable ASCII characters, not starting or ending with a space");

const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** Tracking ids are UUIDs (src/notification/ids.ts); compared in lower case, as stored. */
export const NotificationId = z
  .string()
  .regex(UUID, "must be a notification id: the UUID returned by POST /v1/notifications")
  .transform((s) => s.toLowerCase());

export const NotificationIdParams = z.strictObject({ id: NotificationId });

/**
 * "accepted": enqueued, no view written yet; "scheduled": likewise, waiting
 * for its `sendAt`; the others are the aggregate's (src/notification/aggregate.ts).
 */
export const NotificationStatus = z.enum(["accepted", "scheduled", ...NotificationAggregate.shape.status.options]);
export type NotificationStatus = z.infer<typeof NotificationStatus>;

/** The list's keyset cursor: opaque to clients; the request time in microseconds and the client operation's position. */
export interface ListCursor {
  micros: string;
  position: number;
}

export function encodeListCursor(c: ListCursor): string {
  return Buffer.from(`n1:${c.micros}:${c.position}`, "utf8").toString("base64url");
}

const ListCursorParam = z.string().transform((text, ctx): ListCursor => {
  const match = /^n1:(-?\d{1,20}):(\d{1,16})$/.exec(Buffer.from(text, "base64url").toString("utf8"));
  if (!match || text.length > 100 || BigInt(match[1]!) < -62135596800000000n || BigInt(match[1]!) > 253402300799999999n) {
    ctx.addIssue({ code: "custom", message: "not a cursor this API returned (use `next` of the previous page)" });
    return z.NEVER;
  }
  return { micros: match[1]!, position: Number(match[2]) };
});

/**
 * Every list pages the same way: `after` in (the `next` of the previous
 * page), `next` out (docs/api.md, "Paging"). The list's `cursor` is the
 * deprecated former name of its `after`, still accepted.
 */
export const ListNotificationsQuery = z
  .strictObject({
    entityId: entityId.optional(),
    status: NotificationStatus.optional(),
    since: isoTime.optional(),
    until: isoTime.optional().describe("Only notifications requested before this time"),
    channel: Channel.optional().describe("Only notifications with an operation on this channel"),
    tag: z
      .string()
      .regex(/^[A-Za-z0-9_.:-]{1,64}=[^\r\n]{0,256}$/, "must be key=value (a tag name as POST /v1/notifications takes it), e.g. category=billing")
      .optional()
      .describe("Only notifications the client tagged so (its `tags`), e.g. category=billing"),
    q: z
      .string()
      .trim()
      .min(1, "must not be empty")
      .max(200)
      .optional()
      .describe(
        "Text: a tracking id (or its start), or a case-insensitive part of the subject, of a recipient's address (email address, Slack channel) or of the entity's current email address or Slack destination",
      ),
    after: ListCursorParam.optional().describe("`next` of the previous page; omit for the first page"),
    cursor: ListCursorParam.optional()
      .describe("Deprecated: the former name of `after` (every list pages with `after` and answers `next`), still accepted")
      .meta({ deprecated: true }),
    limit: intParam(1, 100, 20),
  })
  .refine((q) => q.after === undefined || q.cursor === undefined, { message: "give `after` or its old name `cursor`, not both", path: ["cursor"] });

export const NoQuery = z.strictObject({});

/** POST /v1/notifications with `entityIds`: each entity's notification, in the request's order. */
export const NotificationsAccepted = z.object({
  status: z.literal("accepted"),
  notifications: z.array(z.object({ entityId, id: z.uuid(), links: z.object({ self: z.string(), events: z.string() }) })),
});

export const NotificationAccepted = z.object({
  id: z.uuid(),
  status: z.literal("accepted"),
  links: z.object({ self: z.string(), events: z.string() }),
});

/**
 * What GET answers before the first view is written: the notification is
 * enqueued, nothing has handled it yet; `scheduled` while it waits for its
 * `sendAt` (then cancellable).
 */
export const NotificationPending = z.object({
  id: z.uuid(),
  status: z.enum(["accepted", "scheduled"]),
  entity: z.object({ id: entityId }),
  requestedAt: z.string(),
  sendAt: z.string().optional().describe("When `scheduled`: when it is to be sent"),
});

/** One channel of a view (src/notification/projection.ts, ChannelView): the aggregate's channel plus its live progress. */
const ChannelView = z.strictObject({
  channel: Channel,
  destination: z.string(),
  status: z.enum(["pending", "sending", "retrying", "sent", "failed"]).describe("`retrying`: an attempt failed and the next one is due at `nextAttemptAt`"),
  attempts: z.number().int(),
  lastError: z.string().nullable(),
  sentAt: z.string().nullable(),
  nextAttemptAt: z.string().optional().describe("While retrying: when the next attempt is due"),
  messageId: z.string().optional().describe("Email, once sent: the Message-ID"),
  ts: z.string().optional().describe("Slack, once sent: the message's ts"),
});

/**
 * The view the projection bot writes (src/notification/projection.ts,
 * buildViews), served as stored. Strict, so a field the projection starts
 * writing fails the test that parses real views (test/int/api.shapes.int.test.ts)
 * until it is documented here.
 */
export const NotificationView = z.strictObject({
  id: z.uuid(),
  status: NotificationAggregate.shape.status,
  entity: z.strictObject({ id: z.string(), name: z.string().nullable() }),
  subject: z.string(),
  tags: z.record(z.string(), z.string()),
  requestedAt: z.string(),
  updatedAt: z.string(),
  sendAt: z.string().optional().describe("A scheduled notification (`sendAt` or `delay`): when it was, or is, to be sent"),
  outcome: NotificationAggregate.shape.outcome,
  failureReason: z.string().nullable(),
  channels: z.array(ChannelView),
  skipped: NotificationAggregate.shape.skipped,
  alert: NotificationAggregate.shape.alert,
  resends: NotificationAggregate.shape.resends.describe("Operators' resends, oldest first (absent: never resent)"),
  version: z.number().int().describe("Position in notification.events of the last event the view includes"),
});
export type NotificationViewBody = z.infer<typeof NotificationView>;

export const NotificationList = z.object({
  items: z.array(z.union([NotificationView, NotificationPending])),
  next: z.string().nullable(),
  viewsBehind: z
    .array(z.object({ id: z.uuid(), position: z.number().int().describe("Position in notification.events of the notification's latest event") }))
    .describe("The items whose view does not include their notification's latest event yet (the projection writes a view a moment after the events): read again to see it"),
});

const RecordRefSchema = z.object({ stream: z.string(), position: z.number().int() });

const HistoryEntry = z.object({
  entry: z.number().int(),
  from: z.enum(HANDLING_STATUSES),
  to: z.enum(HANDLING_STATUSES),
  action: z.string(),
  actor: z.string(),
  reason: z.string().nullable(),
  details: z.unknown(),
  attempt: z.number().int(),
  recordedAt: z.string(),
  recordedBy: z.string(),
});

export const NotificationRecord = z.object({
  stream: z.string(),
  position: z.number().int(),
  type: z.string(),
  payload: z.unknown(),
  tags: z.record(z.string(), z.string()),
  causedBy: RecordRefSchema.nullable(),
  recordedAt: z.string(),
  recordedBy: z.string(),
  handling: z.array(
    z.object({
      concern: z.string(),
      status: z.enum(HANDLING_STATUSES),
      attempts: z.number().int(),
      lastError: z.string().nullable(),
      history: z.array(HistoryEntry),
    }),
  ),
});

export const NotificationRecords = z.object({ id: z.uuid(), records: z.array(NotificationRecord) });

// --- The feed -------------------------------------------------------------------

const FeedCursorParam = z.string().transform((text, ctx): FeedCursor => {
  try {
    return decodeCursor(text);
  } catch (error) {
    ctx.addIssue({ code: "custom", message: `${(error as Error).message}` });
    return z.NEVER;
  }
});

export const MAX_WAIT_SECONDS = 30;

export const FeedQuery = z.strictObject({
  after: FeedCursorParam.optional().describe("`<txid>-<position>`: `next` of the previous page or an event's `cursor`; omit to start from the beginning"),
  limit: intParam(1, 1000, 100),
  wait: intParam(0, MAX_WAIT_SECONDS, 0).describe(`seconds to wait for an event when none is available yet (long-poll), 0 to ${MAX_WAIT_SECONDS}; default 0`),
});

export const FeedEvent = z.object({
  cursor: z.string(),
  position: z.number().int(),
  id: z.string(),
  type: z.string(),
  payload: z.unknown(),
  tags: z.record(z.string(), z.string()),
  causedBy: RecordRefSchema.nullable(),
  recordedAt: z.string(),
});

export const FeedPage = z.object({ events: z.array(FeedEvent), next: z.string() });

// --- Entities -------------------------------------------------------------------

export const EntityIdParams = z.strictObject({ id: entityId });
export const EntityBody = EntityInput;
export const EntityHistoryQuery = z.strictObject({ at: isoTime.optional() });

const entityVersionNumber = z
  .number()
  .int()
  .min(1)
  .describe("This entity's own version: 1 for its first, one more for each change or removal (a re-created entity continues the count)");

export const EntityVersionResponse = z.object({
  entity: Entity,
  version: entityVersionNumber,
  recordedAt: z.string(),
  changed: z.array(z.string()).describe("The top-level fields this version changed (every field for a new entity)"),
  changedBy: z.string(),
});

export const EntityPutResponse = EntityVersionResponse.extend({
  changed: z.array(z.string()).describe("The top-level fields this request changed: every field when created, none when unchanged"),
  result: z.enum(["created", "changed", "unchanged"]),
});

export const EntityHistoryResponse = z.object({
  id: entityId,
  versions: z.array(
    z.object({
      version: entityVersionNumber,
      position: z.number().int().describe("Where the version is in entity.events; a notification's `entityVersion` names this position"),
      recordedAt: z.string(),
      type: z.string(),
      payload: z.unknown(),
    }),
  ),
});

// --- Errors -------------------------------------------------------------------

export const ProblemSchema = z.looseObject({
  type: z.string(),
  title: z.string(),
  status: z.number().int(),
  detail: z.string(),
  instance: z.string().optional(),
  errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
  requiredScope: Scope.optional(),
  requestId: z.string().optional().describe("The request's id, as in the X-Request-Id response header and the server's log lines"),
});
