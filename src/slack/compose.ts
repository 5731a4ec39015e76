import { SLACK_TEXT_MAX, fitSlackText } from "./format";
import { markdownToMrkdwn } from "./mrkdwn";

export { markdownToMrkdwn };

/**
 * The Slack parts of a notification, each kept as the client gave it until
 * the Slack bot builds the message (src/slack/format.ts):
 *
 * - `subject`: shown exactly as typed (a plain_text header block when there is a mrkdwn body);
 * - `text`: subject and plain text, the notification fallback (escaped, never formatted);
 * - `mrkdwn`: the client's Markdown as Slack mrkdwn (markdown-it renders it,
 *   escaping every piece of text), when it gave Markdown.
 *
 * Both texts are cut to what Slack takes (40,000 characters): the API
 * accepts 100,000.
 */
export function composeSlackParts(notification: { subject: string; text: string; markdown?: string | undefined }): {
  subject: string;
  text: string;
  mrkdwn?: string;
} {
  const text = fitSlackText(`${notification.subject}\n\n${notification.text}`, SLACK_TEXT_MAX);
  if (notification.markdown === undefined) return { subject: notification.subject, text };
  return { subject: notification.subject, text, mrkdwn: fitSlackText(markdownToMrkdwn(notification.markdown), SLACK_TEXT_MAX) };
}
