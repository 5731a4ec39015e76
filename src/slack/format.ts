/**
 * How a SendSlackMessageOp's text becomes chat.postMessage arguments.
 *
 * Slack reads `<...>` as control sequences (`<!channel>`, `<@U123>`,
 * `<https://x|label>`) and `&` as the start of an entity, so text that comes
 * from a user must have `&`, `<` and `>` escaped or it could ping a whole
 * channel or disguise a link (https://docs.slack.dev/messaging/formatting-message-text#escaping).
 */

/** Escape plain text for Slack: `&` → `&amp;`, `<` → `&lt;`, `>` → `&gt;`. Nothing else is touched. */
export function escapeSlackText(text: string): string {
  return text.replace(/[&<>]/g, (c) => (c === "&" ? "&amp;" : c === "<" ? "&lt;" : "&gt;"));
}

// A web or mail link as mrkdwn writes it: <https://example.com> or <https://example.com|label>.
// The URL may not contain spaces, `|` or angle brackets; the label may not contain angle brackets.
const SAFE_LINK = /^<((?:https?:\/\/|mailto:)[^\s<>|]+)(?:\|([^<>]*))?>$/i;
// What a mrkdwn body may contain: a blockquote marker (`>` opening a line), an
// already-escaped entity, a `<...>` sequence, or any single character.
const MRKDWN_TOKEN = /^>|&(?:amp|lt|gt);|<[^<>]*>|[\s\S]/gm;

/**
 * Make a Slack mrkdwn body (composed by the notification workflow from the
 * client's Markdown) safe to post: web and mail links are kept, every other
 * control sequence (mentions such as `<!here>`, `<@U123>`, `<#C123>`,
 * `<!subteam^…>`) is escaped so it shows as text, and so is any stray `&`,
 * `<` or `>` but a blockquote marker. Entities already escaped by the
 * producer are left alone, so the body is never escaped twice.
 */
export function sanitizeSlackMrkdwn(mrkdwn: string): string {
  return mrkdwn.replace(MRKDWN_TOKEN, (token, offset: number) => {
    // A `>` opening a line is mrkdwn's blockquote; with every `<` escaped it cannot close a sequence.
    if (token === ">" && (offset === 0 || mrkdwn[offset - 1] === "\n")) return token;
    if (token.length === 1) return escapeSlackText(token);
    if (token.startsWith("&")) return token;
    const link = SAFE_LINK.exec(token);
    if (!link) return escapeSlackText(token);
    const [, url, label] = link;
    // A label with a raw `&` would still be read as an entity: escape it (entities kept).
    return label === undefined ? `<${url}>` : `<${url}|${sanitizeSlackMrkdwn(label)}>`;
  });
}

/** Slack caps a section block's text at 3000 characters. */
export const SECTION_TEXT_LIMIT = 3000;

/** The arguments tidings passes to chat.postMessage (a subset of the SDK's ChatPostMessageArguments). */
export interface SlackPostArgs {
  channel: string;
  text: string;
  mrkdwn: boolean;
  /** Never turn `@name` or `#channel` typed by a user into mentions. */
  link_names: false;
  blocks?: { type: "section"; text: { type: "mrkdwn"; text: string } }[];
}

/**
 * Build chat.postMessage arguments.
 *
 * - Plain text only: sent escaped with `mrkdwn: false`, so `*` and `_` show as typed.
 * - With a mrkdwn body: the body goes in a section block with mrkdwn
 *   formatting, and the escaped plain text stays in `text`, which Slack uses
 *   for notifications and clients that cannot show blocks. A body longer than
 *   a section block allows is sent as `text` with mrkdwn on instead (Slack
 *   accepts far longer `text`); notifications then show the body.
 */
export function buildPostMessageArgs(msg: { channel: string; text: string; mrkdwn?: string }): SlackPostArgs {
  const text = escapeSlackText(msg.text);
  if (msg.mrkdwn === undefined || msg.mrkdwn.trim() === "") {
    return { channel: msg.channel, text, mrkdwn: false, link_names: false };
  }
  const body = sanitizeSlackMrkdwn(msg.mrkdwn);
  if (body.length > SECTION_TEXT_LIMIT) {
    return { channel: msg.channel, text: body, mrkdwn: true, link_names: false };
  }
  return {
    channel: msg.channel,
    text,
    mrkdwn: true,
    link_names: false,
    blocks: [{ type: "section", text: { type: "mrkdwn", text: body } }],
  };
}
