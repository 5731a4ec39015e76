import { attemptFields, finalFailureFields } from "../channels/channel";
import { z } from "zod";

/**
 * Records of the Slack concern streams. As for email: the stream id is the
 * notification's tracking id and `operationId` names the operation.
 */
export const slackDestination = z.string().regex(/^(#[a-z0-9][a-z0-9._-]{0,79}|[CGDU][A-Z0-9]{2,20})$/, "must be #channel-name or a Slack channel/user id like C0123ABC");

export const SendSlackMessageOp = z.strictObject({
  operationId: z.string().min(1).max(300),
  notificationId: z.string().min(1).max(200),
  purpose: z.enum(["notification", "internal_alert"]),
  entityId: z.string().min(1).max(200).nullable(),
  channel: slackDestination,
  /** The subject, shown exactly as typed (a plain_text header above the mrkdwn body). Absent in operations recorded before it was kept apart. */
  subject: z.string().max(998).optional(),
  /** Plain-text fallback (also what notifications show). */
  text: z.string().min(1).max(40_000),
  /** Slack mrkdwn body, when the client gave Markdown. */
  mrkdwn: z.string().max(40_000).optional(),
  tags: z.record(z.string(), z.string()).default({}),
});
export type SendSlackMessageOp = z.infer<typeof SendSlackMessageOp>;

export const SendSlackMessageRequestedEvent = z.strictObject({
  ...attemptFields,
  channel: z.string(),
});

export const SucceededInSendingSlackMessageEvent = z.strictObject({
  ...attemptFields,
  channel: z.string(),
  /** Slack's message timestamp: the message's id within the channel. */
  ts: z.string(),
  /** Set when this attempt did not post but found the message an earlier, unrecorded attempt posted (conversations.history). */
  foundInHistory: z.literal(true).optional(),
});

export const FailedToSendSlackMessageEvent = z.strictObject({
  ...attemptFields,
  ...finalFailureFields,
  /** Slack's error code (`channel_not_found`, `ratelimited`, ...) when it gave one. */
  slackError: z.string().nullable(),
  httpStatus: z.number().int().nullable(),
});

/** An attempt failed and another follows after `retryInMs`: the view shows the channel as retrying. Not an outcome. */
export const SendSlackMessageAttemptFailedEvent = z.strictObject({
  ...attemptFields,
  error: z.string(),
  slackError: z.string().nullable(),
  httpStatus: z.number().int().nullable(),
  retryInMs: z.number().int().min(0),
});

export const SlackRecordTypes = {
  SendSlackMessageOp: "SendSlackMessageOp",
  SendSlackMessageRequestedEvent: "SendSlackMessageRequestedEvent",
  SendSlackMessageAttemptFailedEvent: "SendSlackMessageAttemptFailedEvent",
  SucceededInSendingSlackMessageEvent: "SucceededInSendingSlackMessageEvent",
  FailedToSendSlackMessageEvent: "FailedToSendSlackMessageEvent",
} as const;
