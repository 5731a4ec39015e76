import type { ChannelDescriptor, ChannelOutcome } from "../channels/channel";
import { EmailRecordTypes, FailedToSendEmailEvent, SendEmailOp, SucceededInSendingEmailEvent } from "./email.schemas";
import { EmailStreams } from "./email.streams";
import { messageIdFor } from "./sender";

/** Email as a channel: one SendEmailOp per message, with a Message-ID fixed when it is prepared. */
export const emailChannel: ChannelDescriptor = {
  name: "email",
  streams: EmailStreams,
  concern: "email_bot",
  noDestinationReason: "no email address",
  operation(message, settings) {
    return {
      type: EmailRecordTypes.SendEmailOp,
      payload: SendEmailOp.parse({
        operationId: message.operationId,
        notificationId: message.notificationId,
        purpose: message.purpose,
        entityId: message.entityId,
        to: [message.destination],
        subject: message.subject,
        text: message.text,
        ...(message.html !== undefined ? { html: message.html } : {}),
        messageId: messageIdFor(message.operationId, settings.messageIdDomain),
        tags: message.tags,
      }),
    };
  },
  destinationOf(payload) {
    return ((payload as { to?: string[] }).to ?? []).join(", ");
  },
  outcomeTypes: [EmailRecordTypes.SucceededInSendingEmailEvent, EmailRecordTypes.FailedToSendEmailEvent],
  outcome(record): ChannelOutcome | null {
    if (record.type === EmailRecordTypes.SucceededInSendingEmailEvent) {
      const e = SucceededInSendingEmailEvent.parse(record.payload);
      return { operationId: e.operationId, attempt: e.attempt, outcome: "succeeded", error: null, receipt: { messageId: e.messageId } };
    }
    if (record.type === EmailRecordTypes.FailedToSendEmailEvent) {
      const e = FailedToSendEmailEvent.parse(record.payload);
      return { operationId: e.operationId, attempt: e.attempt, outcome: "failed", error: e.error, receipt: {} };
    }
    return null;
  },
};
