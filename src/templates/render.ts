import { Liquid, LiquidError } from "liquidjs";
import MarkdownIt from "markdown-it";
import sanitizeHtml from "sanitize-html";
import { UnprocessableError, ValidationError } from "../errors/errors";
import { SlackBlocks } from "../slack/slack.schemas";
import type { RenderedContent, TemplateContent, TemplateInput } from "./template.schemas";

/**
 * Rendering templates with Liquid (liquidjs), strictly: an undefined
 * variable or an unknown filter is an error naming it, never an empty
 * string, so a typo in a template or a missing `data` field refuses the
 * notification instead of sending "Hello ,". Inside `{% if %}` (and with the
 * `default` filter) an undefined variable is false (lenientIf), which is how
 * a template says a variable is optional.
 */

// Limits against a template or a `data` that would take the process down:
// at most 1 MB of template text parsed and 100,000 tags/outputs rendered per field.
const LIMITS = { parseLimit: 1_000_000, renderLimit: 100_000, memoryLimit: 50_000_000 };

const options = {
  strictVariables: true,
  strictFilters: true,
  lenientIf: true,
  // Only the data given: no prototype properties (`data.constructor`), no files (`{% include %}` finds nothing).
  ownPropertyOnly: true,
  templates: {},
  ...LIMITS,
};
const plain = new Liquid(options);
/** For HTML: every output is HTML-escaped, so a variable cannot add markup. */
const html = new Liquid({ ...options, outputEscape: "escape" });

const markdown = new MarkdownIt("default", { html: false, linkify: true, typographer: false });

/** Email HTML keeps formatting, links and images; scripts, styles, event handlers and unknown schemes go. */
export function sanitizeEmailHtml(input: string): string {
  return sanitizeHtml(input, {
    allowedTags: [...sanitizeHtml.defaults.allowedTags, "img"],
    allowedAttributes: { ...sanitizeHtml.defaults.allowedAttributes, img: ["src", "alt", "title", "width", "height"] },
    allowedSchemes: ["http", "https", "mailto"],
  });
}

/** Markdown to the HTML of an email, sanitised. */
export function markdownToEmailHtml(md: string): string {
  return sanitizeEmailHtml(markdown.render(md));
}

/** A template refused at enqueue or preview: a variable missing, a filter failing. HTTP 422. */
export class TemplateRenderError extends UnprocessableError {
  constructor(
    readonly templateKey: string,
    readonly field: string,
    problem: string,
  ) {
    super(`template "${templateKey}": ${field}: ${problem}`);
  }
}

/** An unknown template key at enqueue: HTTP 422. */
export class UnknownTemplateError extends UnprocessableError {
  constructor(readonly templateKey: string) {
    super(`unknown template "${templateKey}": create it first (PUT /v1/templates/${encodeURIComponent(templateKey)})`);
  }
}

function liquidMessage(error: unknown): string {
  // liquidjs's messages name the variable or filter and the line and column ("undefined variable: data.name, line:1, col:9").
  return error instanceof LiquidError || error instanceof Error ? error.message.split("\n")[0]! : String(error);
}

/** Every Liquid text of a template, with the path that names it in errors. */
function fieldsOf(template: TemplateInput): Array<{ path: string; text: string; html: boolean }> {
  const out: Array<{ path: string; text: string; html: boolean }> = [];
  const add = (prefix: string, content: TemplateContent) => {
    for (const [name, text] of Object.entries(content.email)) if (text !== undefined) out.push({ path: `${prefix}email.${name}`, text, html: name === "html" });
    if (content.slack) out.push({ path: `${prefix}slack.text`, text: content.slack.text, html: false });
    for (const [path, text] of stringsIn(content.slack?.blocks ?? [], `${prefix}slack.blocks`)) out.push({ path, text, html: false });
  };
  add("", template);
  for (const [locale, content] of Object.entries(template.locales ?? {})) add(`locales.${locale}.`, content);
  return out;
}

/** Every string value inside a JSON value (Block Kit blocks), with its path (`slack.blocks.0.text.text`); keys are not Liquid. */
function stringsIn(value: unknown, path: string): Array<[string, string]> {
  if (typeof value === "string") return [[path, value]];
  if (Array.isArray(value)) return value.flatMap((v, i) => stringsIn(v, `${path}.${i}`));
  if (typeof value === "object" && value !== null) return Object.entries(value).flatMap(([k, v]) => stringsIn(v, `${path}.${k}`));
  return [];
}

/** A JSON value with every string value replaced by `render(path, string)`. */
function mapStrings(value: unknown, path: string, render: (path: string, text: string) => string): unknown {
  if (typeof value === "string") return render(path, value);
  if (Array.isArray(value)) return value.map((v, i) => mapStrings(v, `${path}.${i}`, render));
  if (typeof value === "object" && value !== null) return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, mapStrings(v, `${path}.${k}`, render)]));
  return value;
}

/** Parse every field of a template, so one that is not valid Liquid is refused when it is written (400 naming the field). */
export function checkTemplateSyntax(template: TemplateInput): void {
  const issues: Array<{ path: string; message: string }> = [];
  for (const field of fieldsOf(template)) {
    try {
      plain.parse(field.text);
    } catch (error) {
      issues.push({ path: field.path, message: `not valid Liquid: ${liquidMessage(error)}` });
    }
  }
  if (issues.length > 0) throw ValidationError.fromIssues("template", issues);
}

/** The variant for a locale: the exact tag, else its language (`pt-BR` → `pt`), else the default content. */
export function chooseLocale(template: TemplateInput, locale: string | null | undefined): { locale: string | null; content: TemplateContent } {
  const locales = template.locales ?? {};
  if (locale) {
    if (locales[locale]) return { locale, content: locales[locale] };
    const language = locale.split("-")[0]!;
    if (locales[language]) return { locale: language, content: locales[language] };
  }
  return { locale: null, content: { email: template.email, ...(template.slack ? { slack: template.slack } : {}) } };
}

/** What a template may use: `data` (the request's), `entity` (id, name, locale), `notification` (id). */
export interface RenderScope {
  data: Record<string, unknown>;
  entity?: { id: string; name: string; locale: string | null };
  notification: { id: string };
}

/**
 * Render a template version for one recipient: the locale variant chosen by
 * the entity's locale, each field through Liquid, Markdown to sanitised HTML
 * (and as the text part when there is no `text`), HTML sanitised.
 */
export function renderTemplate(key: string, template: TemplateInput, scope: RenderScope, locale = scope.entity?.locale): RenderedContent {
  const chosen = chooseLocale(template, locale);
  const prefix = chosen.locale === null ? "" : `locales.${chosen.locale}.`;
  const render = (field: string, text: string, engine = plain): string => {
    try {
      return String(engine.parseAndRenderSync(text, { ...scope }));
    } catch (error) {
      throw new TemplateRenderError(key, prefix + field, liquidMessage(error));
    }
  };
  const e = chosen.content.email;
  const subject = render("email.subject", e.subject).trim();
  if (subject === "" || /[\r\n]/.test(subject)) {
    throw new TemplateRenderError(key, `${prefix}email.subject`, subject === "" ? "rendered empty" : "rendered more than one line (no CR or LF: it becomes an email header)");
  }
  const md = e.markdown === undefined ? undefined : render("email.markdown", e.markdown);
  const text = e.text === undefined ? md! : render("email.text", e.text);
  if (text.trim() === "") throw new TemplateRenderError(key, `${prefix}email.${e.text === undefined ? "markdown" : "text"}`, "rendered empty");
  const htmlPart = md !== undefined ? markdownToEmailHtml(md) : e.html !== undefined ? sanitizeEmailHtml(render("email.html", e.html, html)) : undefined;
  const slack = chosen.content.slack ? render("slack.text", chosen.content.slack.text) : undefined;
  if (slack !== undefined && slack.trim() === "") throw new TemplateRenderError(key, `${prefix}slack.text`, "rendered empty");
  const blocks = chosen.content.slack?.blocks === undefined ? undefined : renderBlocks(key, `${prefix}slack.blocks`, chosen.content.slack.blocks, render);
  return {
    locale: chosen.locale,
    email: { subject, text, ...(htmlPart !== undefined ? { html: htmlPart } : {}), ...(md !== undefined ? { markdown: md } : {}) },
    ...(slack !== undefined ? { slack: { text: slack, ...(blocks !== undefined ? { blocks } : {}) } } : {}),
  };
}

/**
 * Block Kit blocks with Liquid rendered in every string value (the same
 * strict variables as every other field; a missing one names its path,
 * `slack.blocks.0.text.text`), checked again after rendering: a variable can
 * empty a block's `type` or make the blocks heavier than a message takes.
 * mrkdwn in them is sanitised when posted (src/slack/format.ts), as the
 * `text` is, so `data` cannot add a mention.
 */
function renderBlocks(key: string, path: string, blocks: SlackBlocks, render: (field: string, text: string) => string): SlackBlocks {
  const rendered = mapStrings(blocks, "slack.blocks", render);
  const checked = SlackBlocks.safeParse(rendered);
  if (!checked.success) {
    const issue = checked.error.issues[0]!;
    throw new TemplateRenderError(key, [path, ...issue.path.map(String)].join("."), `rendered blocks that Slack cannot take: ${issue.message}`);
  }
  return checked.data;
}
