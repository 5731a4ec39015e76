import type { StreamRecord } from "../streams/interfaces";

/**
 * What a channel is, to the notification subsystem. Each channel (src/email,
 * src/slack) describes itself once with a ChannelDescriptor: its streams, how
 * a message becomes its operation, and how its outcome events read. The
 * notification bot, the alert bot, the saga and the projection work from
 * descriptors only, so a third channel is one new folder (streams, schemas,
 * bot, descriptor) and one line in src/notification/channels.ts.
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
  /** The record types of `streams.events` that end an attempt (a success or a failure). */
  readonly outcomeTypes: readonly string[];
  /** An outcome event read (null for any other record): the one definition of "did this attempt send?". */
  outcome(record: StreamRecord): ChannelOutcome | null;
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

/** The end of one attempt on one operation. */
export interface ChannelOutcome {
  operationId: string;
  /** The attempt that produced it; an operator's re-drive makes a later attempt. */
  attempt: number;
  outcome: "succeeded" | "failed";
  error: string | null;
  /** What the receiver gave back for a success, shown in the notification's view: `messageId` (email), `ts` (Slack). */
  receipt: Record<string, string>;
}
