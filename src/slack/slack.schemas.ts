import { attemptFields, finalFailureFields } from "../channels/channel";
import { z } from "zod";

/**
 * Records of the Slack concern streams. As for email: the stream id is the
 * notification's tracking id and `operationId` names the operation.
 */
export const slackDestination = z.string().regex(/^(#[a-z0-9][a-z0-9._-]{0,79}|[CGDU][A-Z0-9]{2,20})$/, "must be #channel-name or a Slack channel/user id like C0123ABC");

/** Slack takes at most 50 blocks in a message. */
export const MAX_SLACK_BLOCKS = 50;
/** The most a message's blocks may weigh as JSON: Slack answers invalid_blocks well before this, so the bound only keeps an operation small. */
export const MAX_SLACK_BLOCKS_JSON = 100_000;

/**
 * Block Kit blocks as a template gives them (https://docs.slack.dev/block-kit):
 * an array of at most 50 objects, each with a string `type`. tidings does not
 * know every block type Slack has or will have, so it checks the shape and
 * lets Slack judge the rest (an unknown block is its `invalid_blocks`, a
 * permanent failure of the send).
 */
type JsonValue = z.infer<ReturnType<typeof z.json>>;
/** One Block Kit block: an object with a string `type`, its other fields any JSON (what a request body or a stored payload holds). */
export type SlackBlock = { type: string; [field: string]: JsonValue };
// The other fields are not checked field by field: a block is JSON from a request or a record, and
// z.json() here would recurse forever in the OpenAPI generator (zod-to-openapi cannot name z.json()).
const SlackBlock = z.looseObject(
  {
    type: z
      .string({ error: "must be a string naming the block type (section, header, divider, actions, ...)" })
      .min(1, "must name the block type (section, header, divider, actions, ...)")
      .max(100),
  },
  { error: "each block must be an object with a `type` (a Block Kit block)" },
) as z.ZodType<SlackBlock>;

export const SlackBlocks = z
  .array(SlackBlock, { error: "must be an array of Block Kit blocks (objects with a `type`)" })
  .min(1, "give at least one block, or leave `blocks` out")
  .max(MAX_SLACK_BLOCKS, `at most ${MAX_SLACK_BLOCKS} blocks (Slack's limit for one message)`)
  .refine((blocks) => JSON.stringify(blocks).length <= MAX_SLACK_BLOCKS_JSON, `at most ${MAX_SLACK_BLOCKS_JSON} characters of JSON`);
export type SlackBlocks = z.infer<typeof SlackBlocks>;

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
  /** A template's Block Kit blocks, rendered: posted as the message's blocks, with the mrkdwn body (or `text`) as the fallback. */
  blocks: SlackBlocks.optional(),
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
