import MarkdownIt from "markdown-it";

/**
 * Markdown (CommonMark + GFM tables and strikethrough, as markdown-it parses
 * it) to Slack mrkdwn. markdown-it does the parsing; this file only renders
 * its tokens, so nothing the author typed reaches Slack unparsed:
 *
 * - every piece of text is escaped (`&`, `<`, `>`), so `<!here>` or
 *   `<@U123>` typed in the body shows as typed and pings nobody; raw HTML is
 *   text too (the parser's `html` option is off);
 * - a formatting character the author meant literally (`\*`, a lone `_`)
 *   cannot format: Slack has no escape for them, so one that could open or
 *   close formatting is replaced by a look-alike (`*` → `∗`, `_` → `ˍ`,
 *   `~` → `∼`, `` ` `` → `ˋ`), as jsx-slack does; inside words and in code
 *   they stay as typed;
 * - `**bold**` and `__bold__` → `*bold*`, `*em*` → `_em_`, `~~strike~~` → `~strike~`,
 *   headings → bold lines, lists → `•`/`1.` lines, block quotes → `>`,
 *   code spans and blocks → `` ` `` and ``` fences, tables → a code block;
 * - links and images → `<url|label>` for http(s) and mailto targets only; a
 *   label that names another place than the target (see disguisedLink)
 *   shows the real target instead: `bank.example (<https://evil.example>)`.
 */

const parser = new MarkdownIt("default", { html: false, linkify: true, typographer: false });
// Bare "example.com" stays text (Slack links it itself); URLs with a scheme become links.
parser.linkify.set({ fuzzyLink: false, fuzzyEmail: false, fuzzyIP: false });

type Token = MarkdownIt.Token;

interface Node {
  token: Token;
  children: Node[];
}

/** The flat block token list as a tree (open/close pairs become one node with children). */
function treeOf(tokens: readonly Token[]): Node[] {
  const root: Node[] = [];
  const stack: Node[][] = [root];
  for (const token of tokens) {
    const siblings = stack.at(-1)!;
    if (token.nesting === 1) {
      const node: Node = { token, children: [] };
      siblings.push(node);
      stack.push(node.children);
    } else if (token.nesting === -1) {
      if (stack.length > 1) stack.pop();
    } else {
      siblings.push({ token, children: [] });
    }
  }
  return root;
}

/** Slack's three entities; nothing else is entity-encoded (Slack would show it as typed). */
export function escapeEntities(text: string): string {
  return text.replace(/[&<>]/g, (c) => (c === "&" ? "&amp;" : c === "<" ? "&lt;" : "&gt;"));
}

const LOOKALIKE: Record<string, string> = { "*": "\u2217", _: "\u02cd", "~": "\u223c", "`": "\u02cb" };
const WORD = /[\p{L}\p{N}]/u;

/**
 * Text as Slack mrkdwn shows it literally: entities escaped, and each
 * formatting character that is not inside a word replaced by its look-alike.
 * Inside a word (`snake_case`, `:white_check_mark:`) Slack does not format,
 * so those stay as typed.
 */
export function literalMrkdwn(text: string): string {
  return text.replace(/[&<>*_~`]/g, (c: string, i: number) => {
    if (c === "&") return "&amp;";
    if (c === "<") return "&lt;";
    if (c === ">") return "&gt;";
    const inWord = i > 0 && i < text.length - 1 && WORD.test(text[i - 1]!) && WORD.test(text[i + 1]!);
    return inWord ? c : LOOKALIKE[c]!;
  });
}

/** Code as mrkdwn shows it: entities escaped; a backtick would end the span, so it becomes a look-alike. */
function literalCode(text: string): string {
  return escapeEntities(text).replace(/`/g, LOOKALIKE["`"]!);
}

/* ---------------------------------------------------------------------------
 * Disguised links
 * ------------------------------------------------------------------------- */

/** Something a reader takes for an address: a URL with a scheme, a www. name, a host name with a path, or an email address. */
const ADDRESS_LIKE =
  /(?:\b[a-z][a-z0-9+.-]*:\/\/[^\s<>()]+)|(?:\bwww\.[^\s<>()]+)|(?:\b[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.[a-z]{2,63}\b(?:[/:?#][^\s<>()]*)?)/giu;
const EMAIL_LIKE = /[^\s<>()@:]+@[a-z0-9.-]+\.[a-z]{2,63}/giu;

function hostOf(address: string): string | null {
  try {
    const url = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(address) ? address : `http://${address}`);
    return (
      url.hostname
        .replace(/^www\./, "")
        .replace(/\.$/, "")
        .toLowerCase() || null
    );
  } catch {
    return null;
  }
}

/**
 * Whether a link's visible label names another place than its target: the
 * label holds an address-like word (`https://bank.example`, `bank.example`,
 * `www.bank.example/login`) whose host differs from the target's (`www.`
 * and case aside), or an email address other than a mailto target's. Such a
 * link must show its real target. Ordinary labels ("the docs") pass.
 */
export function disguisedLink(label: string, target: string): boolean {
  const mailto = /^mailto:/i.test(target);
  const targetAddress = mailto ? safeDecode(target.slice("mailto:".length).split("?")[0] ?? "").toLowerCase() : null;
  const targetHost = mailto ? null : hostOf(target);
  for (const m of label.matchAll(EMAIL_LIKE)) {
    const address = m[0].toLowerCase();
    // A mailbox in a web link's label is fine when it is at the target's own domain.
    if (mailto ? address !== targetAddress : hostOf(address.slice(address.lastIndexOf("@") + 1)) !== targetHost) return true;
  }
  for (const m of label.replace(EMAIL_LIKE, " ").matchAll(ADDRESS_LIKE)) {
    const host = hostOf(m[0]);
    if (host !== null && host !== targetHost) return true;
  }
  return false;
}

function safeDecode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Targets Slack may link to from a message; anything else (javascript:, relative paths) is shown as text. */
export function linkableTarget(href: string): boolean {
  return /^(?:https?:\/\/[^\s<>|]+|mailto:[^\s<>|]+)$/i.test(href);
}

/** `<target|label>`, or `label (<target>)` when the label names another place (label already mrkdwn). */
export function mrkdwnLink(target: string, label: string, plainLabel: string): string {
  const url = escapeEntities(target.replace(/&amp;/g, "&"));
  if (plainLabel.trim() === "") return `<${url}>`;
  if (disguisedLink(plainLabel, target)) return `${label} (<${url}>)`;
  return `<${url}|${label}>`;
}

/* ---------------------------------------------------------------------------
 * Rendering
 * ------------------------------------------------------------------------- */

interface InlineState {
  bold: number;
  italic: number;
  strike: number;
}

/** The text a reader sees for inline tokens (labels of links and images). */
function plainText(tokens: readonly Token[]): string {
  let out = "";
  for (const t of tokens) {
    if (t.type === "text" || t.type === "code_inline") out += t.content;
    else if (t.type === "softbreak" || t.type === "hardbreak") out += " ";
    else if (t.type === "image") out += plainText(t.children ?? []) || t.content;
  }
  return out;
}

function renderInline(tokens: readonly Token[], state: InlineState = { bold: 0, italic: 0, strike: 0 }, inLabel = false): string {
  let out = "";
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    switch (t.type) {
      case "text":
        out += literalMrkdwn(t.content);
        break;
      case "softbreak":
      case "hardbreak":
        out += inLabel ? " " : "\n";
        break;
      case "code_inline":
        out += t.content === "" ? "" : `\`${literalCode(t.content)}\``;
        break;
      // Slack cannot nest a style in itself: only the outermost one writes markers.
      case "strong_open":
      case "strong_close":
        if (t.type === "strong_open" ? state.bold++ === 0 : --state.bold === 0) out += "*";
        break;
      case "em_open":
      case "em_close":
        if (t.type === "em_open" ? state.italic++ === 0 : --state.italic === 0) out += "_";
        break;
      case "s_open":
      case "s_close":
        if (t.type === "s_open" ? state.strike++ === 0 : --state.strike === 0) out += "~";
        break;
      case "link_open": {
        let depth = 1;
        let j = i + 1;
        for (; j < tokens.length; j++) {
          if (tokens[j]!.type === "link_open") depth++;
          if (tokens[j]!.type === "link_close" && --depth === 0) break;
        }
        const inner = tokens.slice(i + 1, j);
        i = j;
        const href = String(t.attrGet("href") ?? "");
        // Formatting inside a link label is not reliably shown by Slack: the label is plain text.
        const plain = plainText(inner);
        const label = literalMrkdwn(plain);
        if (t.markup === "autolink" || t.markup === "linkify") {
          out += linkableTarget(href) ? `<${escapeEntities(href)}>` : label;
        } else if (linkableTarget(href)) {
          out += mrkdwnLink(href, label, plain);
        } else {
          out += href ? `${label} (${literalMrkdwn(href)})` : label;
        }
        break;
      }
      case "image": {
        const src = String(t.attrGet("src") ?? "");
        const plain = plainText(t.children ?? []) || t.content;
        const label = literalMrkdwn(plain);
        out += linkableTarget(src) ? mrkdwnLink(src, label, plain) : label;
        break;
      }
      default:
        // html_inline cannot occur (html is off); any other token shows its text.
        if (t.content) out += literalMrkdwn(t.content);
    }
  }
  return out;
}

function inlineOf(node: Node, state?: InlineState): string {
  const inline = node.children.find((c) => c.token.type === "inline");
  return inline ? renderInline(inline.token.children ?? [], state) : "";
}

function fence(code: string): string {
  const body = code.replace(/\n$/, "");
  return `\`\`\`\n${literalCode(body)}\n\`\`\``;
}

function indent(text: string, prefix: string, firstPrefix = prefix): string {
  return text
    .split("\n")
    .map((line, i) => (i === 0 ? firstPrefix : line === "" ? "" : prefix) + line)
    .join("\n");
}

function renderTable(node: Node): string {
  const rows: string[][] = [];
  const visit = (n: Node) => {
    if (n.token.type === "tr_open") rows.push([]);
    if (n.token.type === "inline") rows.at(-1)?.push(plainText(n.token.children ?? []));
    n.children.forEach(visit);
  };
  node.children.forEach(visit);
  return fence(rows.map((r) => `| ${r.join(" | ")} |`).join("\n"));
}

function renderBlocks(nodes: readonly Node[], tight = false, quoted = false): string {
  const parts: string[] = [];
  for (const node of nodes) {
    const block = renderBlock(node, quoted);
    if (block !== null) parts.push(block);
  }
  return parts.join(tight ? "\n" : "\n\n");
}

function renderList(node: Node, ordered: boolean): string {
  let n = Number(node.token.attrGet("start") ?? 1);
  const items = node.children.filter((c) => c.token.type === "list_item_open");
  return items
    .map((item) => {
      const marker = ordered ? `${n++}. ` : "• ";
      const tight = item.children.every((c) => c.token.type !== "paragraph_open" || c.token.hidden);
      // A quote marker can only open a line: inside a list item a quote is plain text.
      return indent(renderBlocks(item.children, tight, true), "    ", marker);
    })
    .join("\n");
}

function renderBlock(node: Node, quoted: boolean): string | null {
  const { token } = node;
  switch (token.type) {
    case "paragraph_open":
      return inlineOf(node);
    case "heading_open":
      // A heading is a bold line; bold inside it adds nothing.
      return `*${inlineOf(node, { bold: 1, italic: 0, strike: 0 })}*`;
    case "bullet_list_open":
      return renderList(node, false);
    case "ordered_list_open":
      return renderList(node, true);
    case "blockquote_open":
      // Slack quotes one level deep: a quote inside a quote (or a list) is part of it.
      if (quoted) return renderBlocks(node.children, false, true);
      return indent(renderBlocks(node.children, false, true), "> ").replace(/^$/gm, ">");
    case "fence":
    case "code_block":
      return fence(token.content);
    case "hr":
      return "\u2500".repeat(10);
    case "table_open":
      return renderTable(node);
    case "inline":
      return renderInline(token.children ?? []);
    default:
      return node.children.length > 0 ? renderBlocks(node.children, false, quoted) : token.content ? literalMrkdwn(token.content) : null;
  }
}

/**
 * Markdown to Slack mrkdwn (see the top of this file). A line that starts
 * with an escaped `>` gets a soft hyphen first, so Slack does not read it as
 * a block quote (only the quotes written as Markdown quote).
 */
export function markdownToMrkdwn(markdown: string): string {
  return renderBlocks(treeOf(parser.parse(markdown, {}))).replace(/^&gt;/gm, "\u00ad&gt;");
}
