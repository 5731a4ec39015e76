import { z } from "zod";

/**
 * What a channel is, to the notification subsystem. Each channel (src/email,
 * src/slack) describes itself once with a ChannelDescriptor: its streams, how
 * a message becomes its operation, and how its outcome events read. The
 * notification bot, the alert bot, the saga and the projection work from
 * descriptors only. A third channel is a new folder (streams, schemas, bot,
 * descriptor) registered in src/notification/channels.ts and in
 * notification.channels (a test compares the two); the entity's contact
 * field for it (src/entities/entity.schemas.ts), its audit view and its
 * metrics label are the other places that name channels.
 */
export interface ChannelDescriptor {
  /** The name entities and clients use (`channels: ["email"]`), and the entity's field holding the destination. */
  readonly name: string;
  readonly streams: {
    /** One operation per message to send: everything needed to send it (the Naos rule). */
    readonly operations: string;
    /** What became of each operation's attempts. */
    readonly events: string;
  };
  /** The concern (and bot) that sends this channel's operations. */
  readonly concern: string;
  /** Why a notification skips this channel when the entity has no destination on it. */
  readonly noDestinationReason: string;
  /** The operation that sends this message on this channel, validated. */
  operation(message: ChannelMessage, settings: ChannelSettings): { type: string; payload: unknown };
  /** Where an operation of this channel sends to, as an operator reads it. */
  destinationOf(operationPayload: unknown): string;
  /**
   * The event types of `streams.events` that end an attempt. Which one counts
   * for an operation is decided once, in the database
   * (notification.operation_outcomes, from notification.channels, which lists
   * the same types).
   */
  readonly outcomeTypes: { readonly succeeded: string; readonly failed: string };
  /** What a success event gives back, shown in the notification's view: `messageId` (email), `ts` (Slack). */
  receipt(succeededPayload: unknown): Record<string, string>;
}

/** One message to one destination, as every channel receives it. */
export interface ChannelMessage {
  operationId: string;
  notificationId: string;
  purpose: "notification" | "internal_alert";
  entityId: string | null;
  destination: string;
  subject: string;
  text: string;
  html?: string | undefined;
  markdown?: string | undefined;
  /** Text meant to be read verbatim (an internal alert's report): channels that format text show it preformatted. */
  preformatted?: boolean;
  tags: Record<string, string>;
}

export interface ChannelSettings {
  /** Right-hand side of the Message-IDs of email operations (src/email/sender.ts messageIdDomain). */
  messageIdDomain: string;
}

/** The fields every channel event about an attempt starts with. */
export const attemptFields = {
  operationId: z.string(),
  /** 1 for the first attempt; an operator's re-drive makes a later one. */
  attempt: z.number().int().min(1),
};

/** What every channel's final failure records: the error, its class and why nothing follows. */
export const finalFailureFields = {
  error: z.string(),
  classification: z.enum(["transient", "permanent"]),
  /** Why no further attempt follows: "permanent" or "attempts exhausted". */
  reason: z.string(),
};

/**
 * The event a channel records for a failed attempt: while another attempt
 * follows, an attempt failure (the view shows the channel retrying, with
 * when); once none does, the final failure (the saga's outcome), with its
 * class and why nothing follows.
 */
export function failureEvent<T extends string>(
  ctx: { final: boolean; transient: boolean; retryInMs?: number | undefined },
  types: { attemptFailed: T; failed: T },
  fields: { operationId: string; attempt: number; error: string } & Record<string, unknown>,
): { type: T; payload: Record<string, unknown> } {
  if (!ctx.final) return { type: types.attemptFailed, payload: { ...fields, retryInMs: ctx.retryInMs ?? 0 } };
  return {
    type: types.failed,
    payload: { ...fields, classification: ctx.transient ? "transient" : "permanent", reason: ctx.transient ? "attempts exhausted" : "permanent" },
  };
}
