import type { ChannelDescriptor } from "../channels/channel";
import { EmailRecordTypes, SendEmailOp, SucceededInSendingEmailEvent } from "./email.schemas";
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
  outcomeTypes: { succeeded: EmailRecordTypes.SucceededInSendingEmailEvent, failed: EmailRecordTypes.FailedToSendEmailEvent },
  receipt(payload): Record<string, string> {
    // A view shows what it can: an event it cannot read has no receipt to show, and does not stop the view.
    const event = SucceededInSendingEmailEvent.safeParse(payload);
    return event.success ? { messageId: event.data.messageId } : {};
  },
};
