import { z } from "zod";
import { Channel, categoryKey, entityId } from "../entities/entity.schemas";
import { SlackBlocks } from "../slack/slack.schemas";
import { templateKey } from "../templates/template.schemas";
import { localeTag } from "../util/locale";

/** Records of the notification subsystem's streams (id = tracking id unless said otherwise). */

const tags = z
  .record(
    z
      .string()
      .min(1)
      .max(64)
      .regex(/^[A-Za-z0-9_.:-]+$/, "tag names use letters, digits and _ . : -"),
    z.string().max(256),
  )
  .refine((t) => Object.keys(t).length <= 20, "at most 20 tags")
  .default({});

/** What a client asks for (notification.client_operations). */
/** Some channels, each at most once. */
const channelList = z
  .array(Channel)
  .min(1)
  .max(Channel.options.length)
  .refine((l) => new Set(l).size === l.length, "must not repeat a channel");

export const SendNotificationToEntityOp = z.strictObject({
  entityId,
  // One line: a subject becomes an email header, where CR or LF would end it (and
  // start another, e.g. "Bcc:"); refused rather than flattened into something not sent.
  // Checked before trimming, so a trailing newline is refused too.
  subject: z
    .string()
    .regex(/^[^\r\n]*$/, "must be one line (no CR or LF): it becomes an email header")
    .trim()
    .min(1)
    .max(998),
  text: z.string().min(1).max(100_000),
  html: z.string().max(500_000).optional(),
  markdown: z.string().max(100_000).optional(),
  /** Send on these channels instead of the entity's preferred ones (opt-outs still win). */
  channels: channelList.optional(),
  tags,
  idempotencyKey: z.string().min(1).max(255).optional(),
  /**
   * Set by the enqueue when the request named a template: the version that
   * rendered `subject`, `text`, `html`, `markdown` and `slack`, and the
   * locale variant used (null: the default). What the audit answers
   * "which template version did Ada get?" with.
   */
  template: z.strictObject({ key: templateKey, version: z.number().int().min(1), locale: localeTag.nullable() }).optional(),
  /** The request's variables the template was rendered with. */
  data: z.record(z.string(), z.json()).optional(),
  /**
   * A template's own Slack content, rendered: mrkdwn, the Slack message's body instead of one made
   * from the email content, and the template's Block Kit blocks when it has them (then the mrkdwn is their fallback).
   */
  slack: z.strictObject({ mrkdwn: z.string().min(1).max(40_000), blocks: SlackBlocks.optional() }).optional(),
  /** What kind of notification this is (`security`, `marketing`): the entity's preferences for it apply. */
  category: categoryKey.optional(),
  /** Not before this time (UTC): the notification bot's job runs then (consumer run_at_field), and a cancel before it ends the notification. */
  sendAt: z.iso.datetime().optional(),
});
export type SendNotificationToEntityOp = z.infer<typeof SendNotificationToEntityOp>;

/**
 * What a client sends (POST /v1/notifications; the idempotency key is a
 * header): raw content (`subject`, `text`, optional `html`, `markdown`), or
 * a `template` key with its `data`, rendered at enqueue into the client
 * operation above.
 */
/** The most recipients one request may name (`entityIds`): one transaction holds them all. */
export const MAX_RECIPIENTS = 1000;

export const SendNotificationRequestFields = z.strictObject({
  entityId: entityId.optional(),
  entityIds: z
    .array(entityId)
    .min(1)
    .max(MAX_RECIPIENTS)
    .refine((ids) => new Set(ids).size === ids.length, "must not repeat an entity")
    .optional()
    .describe(`Up to ${MAX_RECIPIENTS} entities instead of \`entityId\`: one notification (and tracking id) each, enqueued together`),
  subject: SendNotificationToEntityOp.shape.subject.optional(),
  text: SendNotificationToEntityOp.shape.text.optional(),
  html: SendNotificationToEntityOp.shape.html,
  markdown: SendNotificationToEntityOp.shape.markdown,
  /** The template to render (its current version), instead of `subject` and `text`. */
  template: templateKey.optional().describe("A template key: its current version is rendered at enqueue, instead of `subject` and `text`"),
  /** The template's variables (`{{ data.name }}`). */
  data: z.record(z.string(), z.unknown()).optional().describe("The template's variables, a JSON object (`{{ data.name }}`); only with `template`"),
  channels: channelList.optional(),
  tags,
  category: categoryKey.optional().describe("What kind of notification this is: the entity's preferences for the category apply, unless it is critical"),
  sendAt: z.iso
    .datetime({ offset: true, message: "must be an RFC 3339 date-time with a time zone, e.g. 2026-05-01T12:00:00Z" })
    .optional()
    .describe("Send at this time, not before (RFC 3339); cancel before it with POST /v1/notifications/{id}/cancel"),
  delay: z
    .string()
    .max(64)
    .regex(/^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?$/, "must be an ISO 8601 duration, e.g. PT15M or P1DT2H")
    .optional()
    .describe("Send after this long (ISO 8601 duration, e.g. PT15M), counted from the enqueue on the database's clock"),
});

/** Content or template, not both: every problem of a request named at once, with the fields' own. */
function contentIssues(input: unknown): Array<{ path: string[]; message: string }> {
  if (typeof input !== "object" || input === null || Array.isArray(input)) return [];
  const r = input as Record<string, unknown>;
  const recipients =
    r.entityId === undefined && r.entityIds === undefined
      ? [{ path: ["entityId"], message: "required (or give `entityIds`)" }]
      : r.entityId !== undefined && r.entityIds !== undefined
        ? [{ path: ["entityIds"], message: "not with `entityId`: give one or the other" }]
        : [];
  const when = r.sendAt !== undefined && r.delay !== undefined ? [{ path: ["delay"], message: "not with `sendAt`: give one or the other" }] : [];
  return [...recipients, ...when, ...contentOrTemplateIssues(r)];
}

function contentOrTemplateIssues(r: Record<string, unknown>): Array<{ path: string[]; message: string }> {
  if (r.template === undefined) {
    return [
      ...(["subject", "text"] as const).filter((f) => r[f] === undefined).map((f) => ({ path: [f], message: "required (or give `template`)" })),
      ...(r.data !== undefined ? [{ path: ["data"], message: "only with `template`" }] : []),
    ];
  }
  return (["subject", "text", "html", "markdown"] as const)
    .filter((f) => r[f] !== undefined)
    .map((f) => ({ path: [f], message: "not with `template`: the template gives the content" }));
}

// A transform rather than a refinement: zod skips an object's refinements once a field
// has failed in some ways (an array too long), and a 400 must name every problem at once.
export const SendNotificationRequest = z.unknown().transform((input, ctx) => {
  const parsed = SendNotificationRequestFields.safeParse(input);
  const extra = contentIssues(input);
  for (const issue of parsed.error?.issues ?? []) ctx.addIssue(issue as Parameters<typeof ctx.addIssue>[0]);
  for (const issue of extra) ctx.addIssue({ code: "custom", path: issue.path, message: issue.message, input });
  return parsed.success && extra.length === 0 ? parsed.data : z.NEVER;
});
export type SendNotificationRequest = z.output<typeof SendNotificationRequest>;
/** A request to one entity: what each of a many-recipient request's entities gets. */
export type OneRecipientRequest = Omit<SendNotificationRequest, "entityId" | "entityIds"> & { entityId: string };

/** `sendAt` as stored: UTC, as JavaScript writes it. */
export function normalizeSendAt(sendAt: string): string {
  return new Date(sendAt).toISOString();
}

export const ChannelPlan = z.strictObject({
  channel: Channel,
  operationId: z.string(),
  stream: z.string(),
  destination: z.string(),
});
export type ChannelPlan = z.infer<typeof ChannelPlan>;

export const SkippedChannel = z.strictObject({ channel: Channel, reason: z.string() });

// --- Events (notification.events) -------------------------------------------
export const SendNotificationRequestedEvent = z.strictObject({
  entityId,
  subject: z.string(),
  channelsRequested: z.array(Channel).nullable(),
  tags: z.record(z.string(), z.string()),
  category: z.string().optional(),
  /** A scheduled notification's time (the client operation's `sendAt`): the view keeps it. Absent: sent at once, or recorded before it was copied here. */
  sendAt: z.iso.datetime().optional(),
  /** A scheduled notification's request time (its client operation's): this event is recorded only at its sendAt, or at a cancel. */
  requestedAt: z.iso.datetime().optional(),
  clientOperation: z.strictObject({ stream: z.string(), position: z.number().int() }),
});
export const CouldNotGetOrUseAudienceEvent = z.strictObject({ entityId, reason: z.string() });
export const AudienceOptedOutOfAllChannelsEvent = z.strictObject({
  entityId,
  /** The entity's name when the notification was handled (absent from events written before it was recorded). */
  entityName: z.string().optional(),
  optedOut: z.array(Channel),
  /** The notification's category, when its preferences made the opt-out. */
  category: z.string().optional(),
  skipped: z.array(SkippedChannel),
});
export const CouldNotPrepareToSendOnAnyChannelEvent = z.strictObject({ entityId, entityName: z.string().optional(), skipped: z.array(SkippedChannel) });
export const PreparedToSendOnChannelsEvent = z.strictObject({
  entityId,
  entityName: z.string(),
  prepared: z.array(ChannelPlan).min(1),
  /** `delivery: fallback`: the channels to try next, in order, each only if the one before fails for good. */
  fallbacks: z.array(ChannelPlan).optional(),
  skipped: z.array(SkippedChannel),
  /** The entity version the preferences came from (entity.events position). */
  entityVersion: z.number().int(),
  /** The notification's category, and whether it was critical (no opt-out applied). */
  category: z.string().optional(),
  critical: z.literal(true).optional(),
});

export const OperationOutcome = z.strictObject({
  operationId: z.string(),
  channel: Channel,
  outcome: z.enum(["succeeded", "failed"]),
  error: z.string().nullable(),
  /** Where the outcome came from: the channel event, or the saga's deadline. */
  source: z.strictObject({ stream: z.string(), position: z.number().int() }).nullable(),
});
export type OperationOutcome = z.infer<typeof OperationOutcome>;

export const SendOutcomeEvent = z.strictObject({
  sent: z.array(Channel),
  failed: z.array(Channel),
  operations: z.array(OperationOutcome),
  timedOut: z.boolean(),
  /** `delivery: fallback`: the channel that delivered, after those in `failed` failed for good. */
  deliveredBy: Channel.optional(),
});

/**
 * `delivery: fallback`: the channel being tried failed for good (a permanent
 * error, or its retries ran out), so the saga sends on the next one.
 */
/**
 * No outcome yet this long after the request (DELAYED_ALERT_AFTER_MS): a
 * channel is still retrying or waiting. Not an outcome: the saga waits on;
 * the internal team hears about it.
 */
export const NotificationDelayedEvent = z.strictObject({
  delayedForMs: z.number().int().min(0),
  waitingFor: z.array(z.string()),
});

/** A scheduled notification cancelled before it was sent (POST /v1/notifications/:id/cancel): its outcome, not a failure. */
export const NotificationCancelledEvent = z.strictObject({
  cancelledBy: z.string().min(1).max(300),
  /** When it would have been sent. */
  sendAt: z.string().nullable(),
});

export const FellBackToNextChannelEvent = z.strictObject({
  failed: OperationOutcome,
  next: ChannelPlan,
});
export type SendOutcomeEvent = z.infer<typeof SendOutcomeEvent>;

export const FailedNotificationSentToInternalTeamEvent = z.strictObject({
  failureEventType: z.string(),
  operations: z.array(z.strictObject({ channel: Channel, operationId: z.string(), destination: z.string() })),
});

/**
 * An operator's resend was prepared (ResendNotificationOp): per channel, the
 * failed operation it replaces and the new one, with the old and the new
 * destination (the entity as it is now). A channel the entity can no longer
 * be reached on is skipped, with the reason. With no operation at all,
 * nothing was sent and the notification's outcome stands.
 */
export const ResendRequestedEvent = z.strictObject({
  requestedBy: z.string(),
  reason: z.string(),
  operations: z.array(
    z.strictObject({
      channel: Channel,
      previousOperationId: z.string(),
      operationId: z.string(),
      previousDestination: z.string(),
      destination: z.string(),
    }),
  ),
  skipped: z.array(z.strictObject({ channel: Channel, previousOperationId: z.string(), reason: z.string() })),
  /** The other channels' operations, with the outcome they had: the new saga counts them, so its outcome speaks for the whole notification. */
  carriedOver: z.array(z.strictObject({ channel: Channel, operationId: z.string(), outcome: z.enum(["succeeded", "failed"]) })),
  /** The entity version the new destinations came from (entity.events position); null when the entity no longer exists. */
  entityVersion: z.number().int().nullable(),
});
export type ResendRequestedEvent = z.infer<typeof ResendRequestedEvent>;

/** Every event of notification.events, by type, with its payload's schema. */
export const notificationEventSchemas = {
  SendNotificationRequestedEvent,
  CouldNotGetOrUseAudienceEvent,
  AudienceOptedOutOfAllChannelsEvent,
  CouldNotPrepareToSendOnAnyChannelEvent,
  PreparedToSendOnAllChannelsEvent: PreparedToSendOnChannelsEvent,
  PreparedToSendOnSomeChannelsEvent: PreparedToSendOnChannelsEvent,
  SentOnAllPreparedChannelsEvent: SendOutcomeEvent,
  SentOnSomePreparedChannelsEvent: SendOutcomeEvent,
  CouldNotSendOnAnyPreparedChannelEvent: SendOutcomeEvent,
  FailedNotificationSentToInternalTeamEvent,
  FellBackToNextChannelEvent,
  NotificationDelayedEvent,
  ResendRequestedEvent,
  NotificationCancelledEvent,
} satisfies Record<string, z.ZodType>;
export type NotificationEventType = keyof typeof notificationEventSchemas;

/** The event types by name (`NotificationEventTypes.SentOnAllPreparedChannelsEvent`). */
export const NotificationEventTypes = Object.fromEntries(Object.keys(notificationEventSchemas).map((type) => [type, type])) as { readonly [T in NotificationEventType]: T };

/** Events that end a notification with a failure: the internal team hears about them. */
export const FAILURE_EVENT_TYPES: readonly NotificationEventType[] = [
  "CouldNotGetOrUseAudienceEvent",
  "SentOnSomePreparedChannelsEvent",
  "CouldNotSendOnAnyPreparedChannelEvent",
  // Not a failure yet, but the team hears about it the same way.
  "NotificationDelayedEvent",
];

/**
 * Events that end a notification without sending it and without a failure:
 * the entity has no channel to use (opted out of every one, or no contact
 * detail for any it wants). Status `not_sent`; the internal team hears about
 * them only when ALERT_ON_NOT_SENT is set.
 */
export const NOT_SENT_EVENT_TYPES: readonly NotificationEventType[] = ["AudienceOptedOutOfAllChannelsEvent", "CouldNotPrepareToSendOnAnyChannelEvent"];

// --- Saga (notification.sagas) ----------------------------------------------
/** A channel operation prepared in advance, appended only if the saga falls back to it (the Naos rule: it holds all it needs). */
export const FallbackStep = z.strictObject({
  plan: ChannelPlan,
  operation: z.strictObject({ type: z.string(), payload: z.unknown() }),
});
export type FallbackStep = z.infer<typeof FallbackStep>;

export const NotificationSaga = z.strictObject({
  /** The channel operations whose outcomes decide the notification's outcome. */
  awaiting: z.array(ChannelPlan).min(1),
  /** `all` (every awaited operation counts) or `fallback` (one at a time, in order: the first that delivers ends it). */
  policy: z.enum(["all", "fallback"]).default("all"),
  /** `fallback`: operations already tried that failed for good, oldest first. */
  tried: z.array(ChannelPlan).default([]),
  /** `fallback`: the operations to try next, in order. */
  fallbacks: z.array(FallbackStep).default([]),
  /** Past this, operations without an outcome count as failed ("timed out"). */
  deadline: z.iso.datetime(),
  /** Event written for each outcome (the original system's "instructions"). */
  onAllSent: z.literal("SentOnAllPreparedChannelsEvent"),
  onSomeSent: z.literal("SentOnSomePreparedChannelsEvent"),
  onNoneSent: z.literal("CouldNotSendOnAnyPreparedChannelEvent"),
});
export type NotificationSaga = z.infer<typeof NotificationSaga>;

// --- Internal operations (notification.internal_operations) ------------------
export const AlertInternalTeamOp = z.strictObject({
  failureEventType: z.string(),
  failureEvent: z.strictObject({ stream: z.string(), position: z.number().int() }),
});

/** A check of the saga's, due at `deadline`: has the notification an outcome yet? (DELAYED_ALERT_AFTER_MS) */
export const NotificationDelayWatch = z.strictObject({
  deadline: z.iso.datetime(),
  afterMs: z.number().int().min(1),
});
/**
 * An operator asks for a notification's failed channels to be prepared again
 * from the entity as it is now (src/admin/redrive.ts resendNotification):
 * who, why, and the failed operations it replaces (their lineage).
 */
export const ResendNotificationOp = z.strictObject({
  /** The channels to resend, as the operator named them; absent: every channel whose latest outcome failed. */
  channels: channelList.optional(),
  requestedBy: z.string().trim().min(1).max(200),
  reason: z.string().trim().min(1).max(2000),
  previous: z
    .array(
      z.strictObject({
        channel: Channel,
        operationId: z.string().min(1),
        stream: z.string().min(1),
        position: z.number().int(),
        destination: z.string(),
      }),
    )
    .min(1),
});
export type ResendNotificationOp = z.infer<typeof ResendNotificationOp>;

export const NotificationRecordTypes = {
  SendNotificationToEntityOp: "SendNotificationToEntityOp",
  NotificationSaga: "NotificationSaga",
  NotificationDelayWatch: "NotificationDelayWatch",
  AlertInternalTeamOp: "AlertInternalTeamOp",
  ResendNotificationOp: "ResendNotificationOp",
  NotificationView: "NotificationView",
  NotificationSnapshot: "NotificationSnapshot",
} as const;
