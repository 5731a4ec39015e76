import type { Request, Response } from "express";
import { z } from "zod";
import { getEntity, getEntityHistory, listEntities, patchEntity, putEntity, StaleVersionError, type EntityVersion, type ExpectedVersion } from "../entities/entity.repository";
import { EntityInput, entityId } from "../entities/entity.schemas";
import { inTransaction } from "../db/database";
import { NotFoundError } from "../errors/errors";
import { limitParam } from "./paging";
import { PreconditionFailedError } from "./problem";
import { route, type RouteContext, type RouteDef } from "./routes";
import { EntityBody, EntityHistoryQuery, EntityIdParams, EntityVersionResponse } from "./schemas";

// --- Schemas of the list and PATCH (validation and /openapi.json) ---------------

/** The list's cursor: the last entity id of the previous page, opaque to clients. */
const EntityCursorParam = z
  .string()
  .max(400)
  .transform((text, ctx): string => {
    const match = /^e1:(.+)$/s.exec(Buffer.from(text, "base64url").toString("utf8"));
    if (!match || !entityId.safeParse(match[1]).success) {
      ctx.addIssue({ code: "custom", message: "not a cursor this list returned (use `next` of the previous page)" });
      return z.NEVER;
    }
    return match[1]!;
  })
  .describe("`next` of the previous page; omit for the first page");
const encodeEntityCursor = (id: string) => Buffer.from(`e1:${id}`, "utf8").toString("base64url");

export const ListEntitiesQuery = z.strictObject({
  kind: EntityInput.shape.kind.optional().describe("Only entities of this kind"),
  address: z.string().min(1).max(320).optional().describe("Only entities with this email address (any case) or Slack destination"),
  q: z.string().min(1).max(200).optional().describe("Only entities whose id, name or email contains this text (any case)"),
  after: EntityCursorParam.optional(),
  limit: limitParam(100, 20),
});

export const EntityListResponse = z.object({ items: z.array(EntityVersionResponse), next: z.string().nullable() });

/**
 * PATCH body: some of the entity's fields, merged into it as RFC 7396 JSON
 * Merge Patch says (`null` clears `email` or `slack`; `preferences` merges
 * key by key); the result is validated like a PUT. Unknown fields are refused.
 */
export const EntityPatchBody = z.strictObject(
  Object.fromEntries(Object.keys(EntityInput.shape).map((key) => [key, z.unknown().optional()])) as Record<keyof EntityInput, z.ZodOptional<z.ZodUnknown>>,
);
/** How /openapi.json describes the PATCH body: any of the entity's fields. */
export const EntityPatchDoc = z
  .object(Object.fromEntries(Object.entries(EntityInput.shape).map(([key, field]) => [key, (field as z.ZodType).optional()])))
  .describe("Some of the entity's fields (JSON Merge Patch, RFC 7396): null clears email or slack; preferences merges key by key");

// --- ETag and If-Match --------------------------------------------------------------

/** An entity's ETag is its version: `"3"`. */
export const entityETag = (version: number) => `"${version}"`;

/**
 * The versions If-Match accepts: `*` (any, the entity must exist), or the
 * listed strong tags. A weak tag (W/"3") never matches: If-Match compares
 * strongly (RFC 9110). Absent: the write is unconditional.
 */
export function expectedVersion(header: string | undefined): ExpectedVersion | undefined {
  if (header === undefined) return undefined;
  if (header.trim() === "*") return "any";
  return header
    .split(",")
    .map((tag) => /^"(\d{1,9})"$/.exec(tag.trim())?.[1])
    .filter((v): v is string => v !== undefined)
    .map(Number);
}

function versionJson(v: EntityVersion) {
  return { entity: v.entity, version: v.version, recordedAt: v.recordedAt.toISOString(), changed: v.changed, changedBy: v.changedBy };
}

/** A conditional write that lost: 412 with the version now current, so the client can read it again. */
async function conditional<T>(req: Request, write: (expected: ExpectedVersion | undefined) => Promise<T>): Promise<T> {
  try {
    return await write(expectedVersion(req.get("if-match")));
  } catch (error) {
    if (error instanceof StaleVersionError) throw new PreconditionFailedError(error.message, error.current === null ? null : entityETag(error.current));
    throw error;
  }
}

function sendVersion(res: Response, status: number, version: EntityVersion, extra: Record<string, unknown> = {}): void {
  res
    .status(status)
    .set("ETag", entityETag(version.version))
    .json({ ...versionJson(version), ...extra });
}

export function entityRoutes(ctx: RouteContext): RouteDef[] {
  const { db } = ctx;
  return [
    route(ctx, {
      method: "get",
      path: "/v1/entities",
      scope: "entities",
      query: ListEntitiesQuery,
      async handle({ query: { kind, address, q, after, limit } }, res) {
        const page = await inTransaction(db, "reader", (tx) => listEntities(tx, { kind, address, text: q, afterId: after, limit }));
        res.json({ items: page.items.map(versionJson), next: page.nextAfterId === null ? null : encodeEntityCursor(page.nextAfterId) });
      },
    }),
    route(ctx, {
      method: "put",
      path: "/v1/entities/:id",
      scope: "entities",
      params: EntityIdParams,
      body: EntityBody,
      async handle({ params: { id }, body, principal, req }, res) {
        const { version, created, changed } = await conditional(req, (expected) => putEntity(db, id, body, `api key ${principal.name} (${principal.keyId})`, expected));
        if (created) res.location(`/v1/entities/${encodeURIComponent(id)}`);
        sendVersion(res, created ? 201 : 200, version, { result: created ? "created" : changed ? "changed" : "unchanged" });
      },
    }),
    route(ctx, {
      method: "patch",
      path: "/v1/entities/:id",
      scope: "entities",
      params: EntityIdParams,
      body: EntityPatchBody,
      async handle({ params: { id }, body, principal, req }, res) {
        const { version, changed } = await conditional(req, (expected) => patchEntity(db, id, body, `api key ${principal.name} (${principal.keyId})`, expected));
        sendVersion(res, 200, version, { result: changed ? "changed" : "unchanged" });
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/entities/:id",
      scope: "entities",
      params: EntityIdParams,
      async handle({ params: { id }, req }, res) {
        const version = await inTransaction(db, "reader", (tx) => getEntity(tx, id));
        if (!version) throw new NotFoundError(`no entity with id "${id}"`);
        // A client holding this version already: nothing to send again.
        const ifNoneMatch = req.get("if-none-match");
        if (ifNoneMatch !== undefined && (ifNoneMatch.trim() === "*" || ifNoneMatch.split(",").some((t) => t.trim().replace(/^W\//, "") === entityETag(version.version)))) {
          res.status(304).set("ETag", entityETag(version.version)).end();
          return;
        }
        sendVersion(res, 200, version);
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/entities/:id/history",
      scope: "entities",
      params: EntityIdParams,
      query: EntityHistoryQuery,
      async handle({ params: { id }, query: { at } }, res) {
        if (at !== undefined) {
          const version = await inTransaction(db, "reader", (tx) => getEntity(tx, id, new Date(at)));
          if (!version) throw new NotFoundError(`entity "${id}" did not exist at ${at}`);
          // The version then, tagged as what it is: an If-Match with it succeeds only while it is still current.
          sendVersion(res, 200, version);
          return;
        }
        const history = await inTransaction(db, "reader", (tx) => getEntityHistory(tx, id));
        if (history.length === 0) throw new NotFoundError(`no entity with id "${id}"`);
        res.json({
          id,
          versions: history.map((h) => ({ version: h.version, position: h.position, recordedAt: h.recordedAt.toISOString(), type: h.type, payload: h.payload })),
        });
      },
    }),
  ];
}
