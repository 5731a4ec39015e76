import { z } from "zod";
import { inTransaction } from "../db/database";
import { NotFoundError } from "../errors/errors";
import { getEndpoint, listEndpoints, registerEndpoint, removeEndpoint, type WebhookEndpoint } from "../webhooks/endpoint.repository";
import { endpointId, WebhookEventType, WEBHOOK_EVENT_TYPES } from "../webhooks/webhook.schemas";
import { limitParam, positionCursor } from "./paging";
import { route, type RouteContext, type RouteDef } from "./routes";

// --- Schemas (validation and /openapi.json) -------------------------------------

export const RegisterWebhookBody = z.strictObject({
  url: z.string().min(1).max(2048).describe("Where deliveries are POSTed: an http or https URL, on a public address unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true"),
  events: z
    .array(WebhookEventType)
    .min(1)
    .max(WEBHOOK_EVENT_TYPES.length)
    .refine((l) => new Set(l).size === l.length, "must not repeat an event type")
    .optional()
    .describe("The status changes to deliver; omit for every one"),
  description: z.string().max(500).optional(),
});

export const WebhookIdParams = z.strictObject({ id: endpointId });

const webhookCursor = positionCursor("w");
export const ListWebhooksQuery = z.strictObject({ after: webhookCursor.param.optional(), limit: limitParam(100, 20) });

export const WebhookEndpointResponse = z.object({
  id: z.string(),
  url: z.string(),
  events: z.array(WebhookEventType).nullable().describe("Subscribed event types; null: every one"),
  description: z.string().nullable(),
  status: z.enum(["active", "disabled", "removed"]).describe("`disabled`: its deliveries kept failing (WEBHOOK_DISABLE_AFTER); nothing more is delivered"),
  disabledReason: z.string().nullable(),
  registeredAt: z.string(),
  registeredBy: z.string(),
});
export const WebhookCreatedResponse = WebhookEndpointResponse.extend({
  secret: z.string().describe("The signing secret (whsec_ + base64), shown only in this answer: verify deliveries with it (Standard Webhooks)"),
});
export const WebhookListResponse = z.object({ items: z.array(WebhookEndpointResponse), next: z.string().nullable() });

function endpointJson(e: WebhookEndpoint): z.infer<typeof WebhookEndpointResponse> {
  return {
    id: e.id,
    url: e.url,
    events: e.events,
    description: e.description,
    status: e.status,
    disabledReason: e.disabledReason,
    registeredAt: e.registeredAt.toISOString(),
    registeredBy: e.registeredBy,
  };
}

/** Status webhooks (docs/webhooks.md): register, list, look at and remove endpoints; admin scope. */
export function webhookRoutes(ctx: RouteContext): RouteDef[] {
  const { db } = ctx;
  const policy = ctx.webhookAddresses ?? { allowPrivateAddresses: false };
  return [
    route(ctx, {
      method: "post",
      path: "/v1/webhooks",
      scope: "admin",
      body: RegisterWebhookBody,
      async handle({ body, principal }, res) {
        const { endpoint, secret } = await registerEndpoint(db, body, `api key ${principal.name} (${principal.keyId})`, policy);
        res
          .status(201)
          .location(`/v1/webhooks/${endpoint.id}`)
          .set("Cache-Control", "no-store")
          .json({ ...endpointJson(endpoint), secret });
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/webhooks",
      scope: "admin",
      query: ListWebhooksQuery,
      async handle({ query: { after, limit } }, res) {
        const page = await inTransaction(db, "webhook_admin", (tx) => listEndpoints(tx, { afterPosition: after, limit }));
        res.json({ items: page.items.map(endpointJson), next: page.next === null ? null : webhookCursor.encode(page.next) });
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/webhooks/:id",
      scope: "admin",
      params: WebhookIdParams,
      async handle({ params: { id } }, res) {
        const endpoint = await inTransaction(db, "webhook_admin", (tx) => getEndpoint(tx, id));
        if (!endpoint || endpoint.status === "removed") throw new NotFoundError(`no webhook endpoint with id "${id}"`);
        res.json(endpointJson(endpoint));
      },
    }),
    route(ctx, {
      method: "delete",
      path: "/v1/webhooks/:id",
      scope: "admin",
      params: WebhookIdParams,
      async handle({ params: { id }, principal }, res) {
        await removeEndpoint(db, id, `api key ${principal.name} (${principal.keyId})`);
        res.status(204).end();
      },
    }),
  ];
}
