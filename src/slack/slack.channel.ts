import type { ChannelDescriptor } from "../channels/channel";
import { composeSlackParts } from "./compose";
import { escapeSlackText, fitSlackText } from "./format";
import { SendSlackMessageOp, SlackRecordTypes, SucceededInSendingSlackMessageEvent } from "./slack.schemas";
import { SlackStreams } from "./slack.streams";

/** Slack as a channel: one SendSlackMessageOp per message, its text composed when it is prepared. */
export const slackChannel: ChannelDescriptor = {
  name: "slack",
  streams: SlackStreams,
  concern: "slack_bot",
  noDestinationReason: "no Slack destination",
  operation(message) {
    // A report to read verbatim goes in a code block; a notification's Markdown becomes mrkdwn.
    const parts = message.preformatted
      ? {
          subject: message.subject,
          text: fitSlackText(`${message.subject}\n\n${message.text}`),
          mrkdwn: fitSlackText(`\`\`\`\n${escapeSlackText(message.text)}\n\`\`\``),
        }
      : composeSlackParts(message);
    return {
      type: SlackRecordTypes.SendSlackMessageOp,
      payload: SendSlackMessageOp.parse({
        operationId: message.operationId,
        notificationId: message.notificationId,
        purpose: message.purpose,
        entityId: message.entityId,
        channel: message.destination,
        ...parts,
        tags: message.tags,
      }),
    };
  },
  destinationOf(payload) {
    return (payload as { channel?: string }).channel ?? "";
  },
  outcomeTypes: { succeeded: SlackRecordTypes.SucceededInSendingSlackMessageEvent, failed: SlackRecordTypes.FailedToSendSlackMessageEvent },
  receipt(payload): Record<string, string> {
    // A view shows what it can: an event it cannot read has no receipt to show, and does not stop the view.
    const event = SucceededInSendingSlackMessageEvent.safeParse(payload);
    return event.success ? { ts: event.data.ts } : {};
  },
};
