import { z } from "zod";
import { SlackBlocks } from "../slack/slack.schemas";
import { localeTag } from "../util/locale";

/**
 * Templates (docs/templates.md): content per channel, written in Liquid,
 * rendered at enqueue with the request's `data`, the entity and the
 * notification. Each PUT records a new version in template.versions.
 */

export const templateKey = z
  .string()
  .min(1)
  .max(100)
  .regex(/^[a-z0-9][a-z0-9._-]*$/, "must start with a lower-case letter or digit and contain only lower-case letters, digits and . _ -");

/**
 * Email content: a one-line subject, and a text part, Markdown (the email's
 * HTML and, when `text` is absent, its text part), or both; `html` is an
 * alternative to Markdown for authors who write HTML (sanitised when rendered).
 */
export const EmailContent = z
  .strictObject({
    subject: z.string().min(1).max(998),
    text: z.string().min(1).max(100_000).optional(),
    html: z.string().min(1).max(500_000).optional(),
    markdown: z.string().min(1).max(100_000).optional(),
  })
  .refine((e) => e.text !== undefined || e.markdown !== undefined, { message: "give `text`, `markdown` or both", path: ["text"] })
  .refine((e) => e.html === undefined || e.markdown === undefined, { message: "give `html` or `markdown`, not both", path: ["html"] });
export type EmailContent = z.infer<typeof EmailContent>;

/**
 * Slack content: mrkdwn text, posted as the message body, and optional Block
 * Kit `blocks` (Liquid in every string value), posted as the message's
 * blocks with `text` as the fallback Slack shows in notifications and in
 * clients without blocks. Absent: the message is made from the email content
 * (its Markdown as mrkdwn, or its text), as for a notification sent without
 * a template.
 */
export const SlackContent = z.strictObject({
  text: z.string().min(1).max(40_000),
  blocks: SlackBlocks.optional(),
});
export type SlackContent = z.infer<typeof SlackContent>;

/** What one language of a template says: email is required (it is also the Slack message's fallback). */
export const TemplateContent = z.strictObject({
  email: EmailContent,
  slack: SlackContent.optional(),
});
export type TemplateContent = z.infer<typeof TemplateContent>;

/** PUT /v1/templates/:key body: the default content, optional variants per locale, and a note for people. */
export const TemplateInput = TemplateContent.extend({
  description: z.string().max(1000).optional(),
  locales: z
    .record(localeTag, TemplateContent)
    .refine((l) => Object.keys(l).length <= 50, "at most 50 locales")
    .optional(),
});
export type TemplateInput = z.infer<typeof TemplateInput>;

/** template.versions record (id = template key). */
export const TemplateVersionRecorded = z.strictObject({
  key: templateKey,
  version: z.number().int().min(1),
  template: TemplateInput,
  recordedBy: z.string().min(1).max(300),
});
export type TemplateVersionRecorded = z.infer<typeof TemplateVersionRecorded>;

export const TemplateRecordTypes = {
  TemplateVersionRecorded: "TemplateVersionRecorded",
} as const;

export const TemplateStreams = {
  versions: "template.versions",
} as const;

/** What a template rendered to: the content the channel operations carry. */
export interface RenderedContent {
  /** The locale variant used, or null for the default content. */
  locale: string | null;
  email: { subject: string; text: string; html?: string; markdown?: string };
  slack?: { text: string; blocks?: SlackBlocks };
}
