import { disguisedLink } from "./mrkdwn";
import { MAX_SLACK_BLOCKS } from "./slack.schemas";

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

const unescapeEntities = (s: string) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");

/**
 * Make a Slack mrkdwn body safe to post, whoever composed it (the final
 * safety net after markdownToMrkdwn, and for operations recorded before it):
 * web and mail links are kept, unless their label names another place than
 * their target (then the label is shown followed by the real target, as
 * markdownToMrkdwn does); every other control sequence (mentions such as
 * `<!here>`, `<@U123>`, `<#C123>`, `<!subteam^…>`) is escaped so it shows as
 * text, and so is any stray `&`, `<` or `>` but a blockquote marker.
 * Entities already escaped by the producer are left alone, so the body is
 * never escaped twice.
 */
export function sanitizeSlackMrkdwn(mrkdwn: string): string {
  return mrkdwn.replace(MRKDWN_TOKEN, (token, offset: number) => {
    // A `>` opening a line is mrkdwn's blockquote; with every `<` escaped it cannot close a sequence.
    if (token === ">" && (offset === 0 || mrkdwn[offset - 1] === "\n")) return token;
    if (token.length === 1) return escapeSlackText(token);
    if (token.startsWith("&")) return token;
    const link = SAFE_LINK.exec(token);
    if (!link) return escapeSlackText(token);
    const [, rawUrl, rawLabel] = link;
    // Raw `&` in the URL or label would be read as an entity: escape it (entities kept).
    const url = escapeSlackText(unescapeEntities(rawUrl!));
    if (rawLabel === undefined || rawLabel.trim() === "") return `<${url}>`;
    const label = sanitizeSlackMrkdwn(rawLabel);
    return disguisedLink(unescapeEntities(rawLabel), unescapeEntities(rawUrl!)) ? `${label} (<${url}>)` : `<${url}|${label}>`;
  });
}

/** Slack caps a section block's text at 3000 characters. */
export const SECTION_TEXT_LIMIT = 3000;
/** Slack caps a header block's plain text at 150 characters. */
export const HEADER_TEXT_LIMIT = 150;

/** The `event_type` of the message metadata tidings attaches to every post. */
export const TIDINGS_EVENT_TYPE = "tidings_message";

type TextObject = { type: "mrkdwn"; text: string } | { type: "plain_text"; text: string };
/** A Block Kit block a template gave: any type Slack has, checked only for its shape (src/slack/slack.schemas.ts). */
export type TemplateBlock = { type: string; [field: string]: unknown };
export type SlackBlock = { type: "header"; text: { type: "plain_text"; text: string } } | { type: "section"; text: TextObject };

/** The arguments tidings passes to chat.postMessage (a subset of the SDK's ChatPostMessageArguments). */
export interface SlackPostArgs {
  channel: string;
  text: string;
  mrkdwn: boolean;
  /** Never turn `@name` or `#channel` typed by a user into mentions. */
  link_names: false;
  blocks?: Array<SlackBlock | TemplateBlock>;
  /** Which operation (and attempt) posted the message: what lets a later attempt find it (conversations.history). */
  metadata?: { event_type: string; event_payload: { operation_id: string; attempt?: number } };
}

/** A message to post, as the Slack bot gives it. */
export interface SlackMessageParts {
  channel: string;
  /** Plain text, escaped before sending. */
  text: string;
  /** Slack mrkdwn body, sanitised before sending. */
  mrkdwn?: string;
  /** Shown exactly as typed above a mrkdwn body (a plain_text header). */
  subject?: string;
  /** A template's Block Kit blocks: posted as they are (their mrkdwn sanitised), with the mrkdwn body (or the text) as the fallback. */
  blocks?: readonly TemplateBlock[];
  /** Carried in the message's metadata, so that a later attempt can find the message (findPosted). */
  operationId?: string;
  attempt?: number;
}

/**
 * Cut a mrkdwn body into section-sized pieces, at a paragraph or line break
 * when there is one, and never inside an entity or a `<...>` sequence.
 */
export function splitMrkdwn(body: string, limit = SECTION_TEXT_LIMIT): string[] {
  const pieces: string[] = [];
  let rest = body;
  while (rest.length > limit) {
    const window = rest.slice(0, limit);
    let cut = window.lastIndexOf("\n\n");
    if (cut < limit / 2) cut = window.lastIndexOf("\n");
    if (cut < limit / 2) {
      cut = limit;
      const amp = window.lastIndexOf("&");
      if (amp > window.lastIndexOf(";")) cut = amp;
      const open = window.lastIndexOf("<");
      if (open > window.lastIndexOf(">")) cut = Math.min(cut, open);
      if (cut <= 0) cut = limit;
    }
    pieces.push(rest.slice(0, cut));
    rest = rest.slice(cut).replace(/^\n+/, "");
  }
  if (rest.trim() !== "") pieces.push(rest);
  return pieces;
}

/**
 * The subject as Slack shows it exactly as typed: a plain_text object, which
 * Slack never formats and in which `<!channel>` is not a mention. A header
 * block when it fits (150 characters), a plain_text section otherwise.
 */
function subjectBlock(subject: string): SlackBlock {
  return subject.length <= HEADER_TEXT_LIMIT ? { type: "header", text: { type: "plain_text", text: subject } } : { type: "section", text: { type: "plain_text", text: subject } };
}

/**
 * A block with the text of every mrkdwn text object (`{"type": "mrkdwn",
 * "text": ...}`, in a section's text or fields, a context's elements...)
 * made safe by sanitizeSlackMrkdwn: a template's variables are rendered into
 * blocks as they are into `text`, so a `data` value must not become a
 * mention there either. plain_text objects Slack never formats; they stay.
 */
function sanitizeMrkdwnObjects(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sanitizeMrkdwnObjects);
  if (typeof value !== "object" || value === null) return value;
  const object = value as Record<string, unknown>;
  const mapped = Object.fromEntries(Object.entries(object).map(([k, v]) => [k, sanitizeMrkdwnObjects(v)]));
  if (object.type === "mrkdwn" && typeof object.text === "string") mapped.text = sanitizeSlackMrkdwn(object.text);
  return mapped;
}

/**
 * Build chat.postMessage arguments.
 *
 * - Plain text only: sent escaped with `mrkdwn: false`, so `*` and `_` show as typed.
 * - With a mrkdwn body: the subject (when given) in a plain_text header
 *   block, the sanitised body in mrkdwn section blocks, and the escaped plain
 *   text in `text` with `mrkdwn: false`: Slack shows it in notifications and
 *   in clients that cannot show blocks, as typed.
 * - Without a subject, a body longer than a section block allows is sent as
 *   `text` with mrkdwn on instead (how operations recorded before subjects
 *   were kept apart are still sent).
 * - With a template's blocks: those blocks (their mrkdwn sanitised), and as
 *   `text` the sanitised mrkdwn body (mrkdwn on), or the escaped plain text
 *   when there is none.
 * - With an operation id: message metadata (`tidings_message`, the operation
 *   id and attempt), so a later attempt can tell whether this one was posted.
 */
export function buildPostMessageArgs(msg: SlackMessageParts): SlackPostArgs {
  const text = escapeSlackText(msg.text);
  const metadata = msg.operationId
    ? { metadata: { event_type: TIDINGS_EVENT_TYPE, event_payload: { operation_id: msg.operationId, ...(msg.attempt ? { attempt: msg.attempt } : {}) } } }
    : {};
  const subject = msg.subject?.trim() ? msg.subject : undefined;
  if (msg.blocks !== undefined && msg.blocks.length > 0) {
    // A template's own blocks: Slack shows them, and `text` only in notifications and clients without blocks.
    const blocks = msg.blocks.map((block) => sanitizeMrkdwnObjects(block) as TemplateBlock);
    return msg.mrkdwn === undefined || msg.mrkdwn.trim() === ""
      ? { channel: msg.channel, text, mrkdwn: false, link_names: false, blocks, ...metadata }
      : { channel: msg.channel, text: sanitizeSlackMrkdwn(msg.mrkdwn), mrkdwn: true, link_names: false, blocks, ...metadata };
  }
  if (msg.mrkdwn === undefined || msg.mrkdwn.trim() === "") {
    return { channel: msg.channel, text, mrkdwn: false, link_names: false, ...metadata };
  }
  const body = sanitizeSlackMrkdwn(msg.mrkdwn);
  if (subject === undefined && body.length > SECTION_TEXT_LIMIT) {
    return { channel: msg.channel, text: body, mrkdwn: true, link_names: false, ...metadata };
  }
  const blocks: SlackBlock[] = subject === undefined ? [] : [subjectBlock(subject)];
  for (const piece of splitMrkdwn(body).slice(0, MAX_SLACK_BLOCKS - blocks.length)) blocks.push({ type: "section", text: { type: "mrkdwn", text: piece } });
  return { channel: msg.channel, text, mrkdwn: false, link_names: false, blocks, ...metadata };
}

/** The longest `text` and mrkdwn body a SendSlackMessageOp holds (Slack truncates `text` at 40,000 characters). */
export const SLACK_TEXT_MAX = 40_000;

/** `text` cut to `max` characters with a note that it was, for bodies longer than Slack takes. */
export function fitSlackText(text: string, max = SLACK_TEXT_MAX): string {
  if (text.length <= max) return text;
  const note = "\n… (truncated)";
  return text.slice(0, max - note.length) + note;
}
