import { attemptFields, finalFailureFields } from "../channels/channel";
import { z } from "zod";

/**
 * Records of the email concern streams. Every record's stream id is the
 * notification's tracking id; `operationId` tells apart the operations of one
 * notification (its email, and an internal-team alert if it failed) and is
 * derived deterministically from the tracking id (see src/notification/ids.ts).
 */
export const emailAddress = z.email().max(320);

export const SendEmailOp = z.strictObject({
  operationId: z.string().min(1).max(300),
  notificationId: z.string().min(1).max(200),
  /** `notification`: to an entity; `internal_alert`: to the internal team about a failure. */
  purpose: z.enum(["notification", "internal_alert"]),
  entityId: z.string().min(1).max(200).nullable(),
  to: z.array(emailAddress).min(1).max(50),
  subject: z.string().min(1).max(998),
  text: z.string().max(1_000_000),
  html: z.string().max(2_000_000).optional(),
  /** Stable per operation, so a receiver can drop a duplicate sent after a crash. */
  messageId: z.string().regex(/^<[^<>\s@]+@[^<>\s@]+>$/),
  tags: z.record(z.string(), z.string()).default({}),
});
export type SendEmailOp = z.infer<typeof SendEmailOp>;

export const SendEmailRequestedEvent = z.strictObject({
  ...attemptFields,
  to: z.array(z.string()),
  subject: z.string(),
});
export type SendEmailRequestedEvent = z.infer<typeof SendEmailRequestedEvent>;

export const SucceededInSendingEmailEvent = z.strictObject({
  ...attemptFields,
  messageId: z.string(),
  accepted: z.array(z.string()),
  rejected: z.array(z.string()),
  /** The SMTP server's final reply, e.g. "250 2.0.0 Ok: queued as ...". */
  response: z.string(),
});
export type SucceededInSendingEmailEvent = z.infer<typeof SucceededInSendingEmailEvent>;

export const FailedToSendEmailEvent = z.strictObject({
  ...attemptFields,
  ...finalFailureFields,
  smtpCode: z.number().int().nullable(),
});
export type FailedToSendEmailEvent = z.infer<typeof FailedToSendEmailEvent>;

/**
 * An attempt failed and another follows after `retryInMs` (a 451 from a
 * greylisting server, a refused connection): the view shows the channel as
 * retrying with the error and when. Not an outcome: the saga waits on.
 */
export const SendEmailAttemptFailedEvent = z.strictObject({
  ...attemptFields,
  error: z.string(),
  smtpCode: z.number().int().nullable(),
  retryInMs: z.number().int().min(0),
});

export const EmailRecordTypes = {
  SendEmailOp: "SendEmailOp",
  SendEmailRequestedEvent: "SendEmailRequestedEvent",
  SendEmailAttemptFailedEvent: "SendEmailAttemptFailedEvent",
  SucceededInSendingEmailEvent: "SucceededInSendingEmailEvent",
  FailedToSendEmailEvent: "FailedToSendEmailEvent",
} as const;
