import { randomUUID } from "node:crypto";

/**
 * Tracking ids and the ids derived from them. Every record of one
 * notification carries its tracking id; channel operations are told apart by
 * an operation id derived deterministically from it, so a re-run of the
 * notification bot finds the operations it wrote instead of inventing new ones.
 */
export function newTrackingId(): string {
  return randomUUID();
}

export function channelOperationId(trackingId: string, channel: "email" | "slack"): string {
  return `${trackingId}:${channel}`;
}

export function alertOperationId(trackingId: string, alertPosition: number, channel: "email" | "slack"): string {
  return `${trackingId}:alert-${alertPosition}:${channel}`;
}

/**
 * A stable RFC 5322 Message-ID for an email operation: a resend after a
 * crash carries the same one (it is stored in the SendEmailOp when the
 * operation is prepared). The right-hand side is a domain tidings sends for
 * (the sender's, or EMAIL_MESSAGE_ID_DOMAIN: src/email/sender.ts), as RFC
 * 5322 3.6.4 asks, so ids stay unique across installations and receivers
 * that check it see a real domain.
 */
export function messageIdFor(operationId: string, domain: string): string {
  return `<${operationId.replace(/[^A-Za-z0-9.-]/g, ".")}@${domain}>`;
}
