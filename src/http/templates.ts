import type { RouteConfig } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import { inTransaction } from "../db/database";
import { getEntity } from "../entities/entity.repository";
import { entityId } from "../entities/entity.schemas";
import { NotFoundError } from "../errors/errors";
import { renderTemplate } from "../templates/render";
import { getCurrentTemplate, getTemplateVersion, getTemplateVersions, putTemplate, type TemplateVersion } from "../templates/template.repository";
import { TemplateInput, templateKey } from "../templates/template.schemas";
import { localeTag } from "../util/locale";
import { route, type RouteContext, type RouteDef } from "./routes";

/**
 * Templates over HTTP (docs/templates.md): PUT appends a version (admin
 * scope), GET reads the current one and the list of versions, or one
 * version, and preview renders one without sending (reader scope).
 */

export const TemplateKeyParams = z.strictObject({ key: templateKey });
export const TemplateVersionParams = z.strictObject({
  key: templateKey,
  n: z
    .string()
    .regex(/^[1-9]\d{0,8}$/, "must be a version number: 1, 2, ...")
    .transform(Number),
});

export const TemplateVersionBody = z
  .object({
    key: templateKey,
    version: z.number().int().min(1).describe("1 for the first version, one more for each PUT that changed it"),
    template: TemplateInput,
    recordedAt: z.string(),
    recordedBy: z.string(),
  })
  .meta({ id: "TemplateVersion" });

export const TemplatePutResponse = TemplateVersionBody.extend({ result: z.enum(["created", "changed", "unchanged"]) }).meta({ id: "TemplatePutResult" });

export const TemplateResponse = z
  .object({
    key: templateKey,
    current: TemplateVersionBody,
    versions: z.array(z.object({ version: z.number().int(), recordedAt: z.string(), recordedBy: z.string() })).describe("Every version, oldest first"),
  })
  .meta({ id: "Template" });

export const PreviewBody = z
  .strictObject({
    entityId: entityId.optional().describe("Render for this entity (its name, locale); without it, `entity` is not defined"),
    data: z.record(z.string(), z.unknown()).default({}),
    version: z.number().int().min(1).optional().describe("A version other than the current one"),
    locale: localeTag.optional().describe("Render this locale's variant (instead of the entity's)"),
  })
  .meta({ id: "TemplatePreviewRequest" });

export const PreviewResponse = z
  .object({
    key: templateKey,
    version: z.number().int(),
    locale: z.string().nullable().describe("The locale variant used; null: the default content"),
    email: z.object({ subject: z.string(), text: z.string(), html: z.string().optional(), markdown: z.string().optional() }),
    slack: z
      .object({
        mrkdwn: z.string(),
        blocks: z
          .array(z.looseObject({ type: z.string() }))
          .optional()
          .describe("The template's Block Kit blocks, rendered (the mrkdwn is their fallback)"),
      })
      .optional()
      .describe("The template's own Slack content; absent: the message is made from the email content"),
  })
  .meta({ id: "TemplatePreview" });

function versionJson(v: TemplateVersion) {
  return { key: v.key, version: v.version, template: v.template, recordedAt: v.recordedAt.toISOString(), recordedBy: v.recordedBy };
}

export function templateRoutes(ctx: RouteContext): RouteDef[] {
  const { db } = ctx;
  return [
    route(ctx, {
      method: "put",
      path: "/v1/templates/:key",
      scope: "admin",
      params: TemplateKeyParams,
      body: TemplateInput,
      async handle({ params: { key }, body, principal }, res) {
        const { version, created, changed } = await putTemplate(db, key, body, `api key ${principal.name} (${principal.keyId})`);
        if (created) res.location(`/v1/templates/${encodeURIComponent(key)}`);
        res.status(created ? 201 : 200).json({ ...versionJson(version), result: created ? "created" : changed ? "changed" : "unchanged" });
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/templates/:key",
      scope: "reader",
      params: TemplateKeyParams,
      async handle({ params: { key } }, res) {
        const versions = await inTransaction(db, "reader", (tx) => getTemplateVersions(tx, key));
        const current = versions.at(-1);
        if (!current) throw new NotFoundError(`no template with key "${key}"`);
        res.json({
          key,
          current: versionJson(current),
          versions: versions.map((v) => ({ version: v.version, recordedAt: v.recordedAt.toISOString(), recordedBy: v.recordedBy })),
        });
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/templates/:key/versions/:n",
      scope: "reader",
      params: TemplateVersionParams,
      async handle({ params: { key, n } }, res) {
        const version = await inTransaction(db, "reader", (tx) => getTemplateVersion(tx, key, n));
        if (!version) throw new NotFoundError(`template "${key}" has no version ${n}`);
        res.json(versionJson(version));
      },
    }),
    route(ctx, {
      method: "post",
      path: "/v1/templates/:key/preview",
      scope: "reader",
      params: TemplateKeyParams,
      body: PreviewBody,
      async handle({ params: { key }, body }, res) {
        const { version, entity } = await inTransaction(db, "reader", async (tx) => ({
          version: body.version === undefined ? await getCurrentTemplate(tx, key) : await getTemplateVersion(tx, key, body.version),
          entity: body.entityId === undefined ? null : await getEntity(tx, body.entityId),
        }));
        if (!version) throw new NotFoundError(body.version === undefined ? `no template with key "${key}"` : `template "${key}" has no version ${body.version}`);
        if (body.entityId !== undefined && !entity) throw new NotFoundError(`no entity with id "${body.entityId}"`);
        const e = entity?.entity;
        const rendered = renderTemplate(
          key,
          version.template,
          {
            data: body.data,
            ...(e ? { entity: { id: e.id, name: e.name, locale: e.locale ?? null } } : {}),
            notification: { id: "preview" },
          },
          body.locale ?? e?.locale,
        );
        res.json({
          key,
          version: version.version,
          locale: rendered.locale,
          email: rendered.email,
          ...(rendered.slack ? { slack: { mrkdwn: rendered.slack.text, ...(rendered.slack.blocks ? { blocks: rendered.slack.blocks } : {}) } } : {}),
        });
      },
    }),
  ];
}

/** The OpenAPI paths of the routes above (registered by src/http/openapi.ts). */
export function templateApiPaths(h: {
  security(scope: string): RouteConfig["security"];
  problems(...codes: number[]): RouteConfig["responses"];
  json(schema: z.ZodType): { "application/json": { schema: z.ZodType } };
  authProblems: RouteConfig["responses"];
}): RouteConfig[] {
  const { security, problems, json, authProblems } = h;
  return [
    {
      method: "put",
      path: "/v1/templates/{key}",
      operationId: "putTemplate",
      summary: "Record a new version of a template (version 1 creates it)",
      description: "Every Liquid field is parsed first: one that is not valid Liquid is a 400 naming it. A body equal to the current version records nothing (`unchanged`).",
      security: security("admin"),
      request: { params: TemplateKeyParams, body: { content: json(TemplateInput.meta({ id: "TemplateInput" })), required: true } },
      responses: {
        201: { description: "Created: version 1", content: json(TemplatePutResponse) },
        200: { description: "A new version, or unchanged (nothing recorded)", content: json(TemplatePutResponse) },
        ...problems(400, 413, 415),
        ...authProblems,
      },
    },
    {
      method: "get",
      path: "/v1/templates/{key}",
      operationId: "getTemplate",
      summary: "The current version of a template and the list of its versions",
      security: security("reader"),
      request: { params: TemplateKeyParams },
      responses: { 200: { description: "The current version and every version, oldest first", content: json(TemplateResponse) }, ...problems(400, 404), ...authProblems },
    },
    {
      method: "get",
      path: "/v1/templates/{key}/versions/{n}",
      operationId: "getTemplateVersion",
      summary: "One version of a template",
      security: security("reader"),
      request: { params: z.strictObject({ key: templateKey, n: z.string().describe("the version number, from 1") }) },
      responses: { 200: { description: "The version", content: json(TemplateVersionBody) }, ...problems(400, 404), ...authProblems },
    },
    {
      method: "post",
      path: "/v1/templates/{key}/preview",
      operationId: "previewTemplate",
      summary: "Render a template without sending",
      description: "A missing variable, an unknown filter or content that cannot be sent (an empty or multi-line subject) is a 422 naming the field.",
      security: security("reader"),
      request: { params: TemplateKeyParams, body: { content: json(PreviewBody), required: true } },
      responses: { 200: { description: "What would be sent", content: json(PreviewResponse) }, ...problems(400, 404, 413, 415, 422), ...authProblems },
    },
  ];
}
