import { OpenAPIRegistry, OpenApiGeneratorV31, type RouteConfig } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import {
  EntityBody,
  EntityHistoryQuery,
  EntityHistoryResponse,
  EntityIdParams,
  EntityPutResponse,
  EntityVersionResponse,
  FeedPage,
  FeedQuery,
  IdempotencyKeyHeader,
  ListNotificationsQuery,
  NotificationAccepted,
  NotificationsAccepted,
  NotificationIdParams,
  NotificationList,
  NotificationPending,
  NotificationRecords,
  NotificationView,
  ProblemSchema,
} from "./schemas";
import { AsOfQuery } from "./consoleSchemas";
import { AsOf, consoleOpenApiRoutes } from "./consoleOpenapi";
import { EntityListResponse, EntityPatchDoc, ListEntitiesQuery } from "./entities";
import { ListWebhooksQuery, RegisterWebhookBody, WebhookCreatedResponse, WebhookEndpointResponse, WebhookIdParams, WebhookListResponse } from "./webhooks";
import { SendNotificationRequestFields } from "../notification/notification.schemas";
import { scheduleApiPaths } from "./schedules";
import { templateApiPaths } from "./templates";

/**
 * Named components. zod's `.meta({ id })` registers a schema in zod's global
 * registry, which refuses an id twice: hence once, at module load.
 */
const Problem = ProblemSchema.meta({ id: "Problem" });
// Documented by its fields (SendNotificationBody checks them, then that it has content or a template, not both).
const SendNotification = SendNotificationRequestFields.meta({ id: "SendNotificationRequest" });
const Accepted = NotificationAccepted.meta({ id: "NotificationAccepted" });
const View = NotificationView.meta({ id: "NotificationView" });
const Pending = NotificationPending.meta({ id: "NotificationPending" });
const List = NotificationList.meta({ id: "NotificationList" });
const Records = NotificationRecords.meta({ id: "NotificationRecords" });
const Feed = FeedPage.meta({ id: "EventFeedPage" });
const Entity = EntityBody.meta({ id: "EntityInput" });
const EntityVersion = EntityVersionResponse.meta({ id: "EntityVersion" });
const EntityPut = EntityPutResponse.meta({ id: "EntityPutResult" });
const EntityHistory = EntityHistoryResponse.meta({ id: "EntityHistory" });
const EntityList = EntityListResponse.meta({ id: "EntityList" });
const EntityPatch = EntityPatchDoc.meta({ id: "EntityPatch" });
const RegisterWebhook = RegisterWebhookBody.meta({ id: "RegisterWebhookRequest" });
const WebhookEndpoint = WebhookEndpointResponse.meta({ id: "WebhookEndpoint" });
const WebhookCreated = WebhookCreatedResponse.meta({ id: "WebhookEndpointCreated" });
const WebhookList = WebhookListResponse.meta({ id: "WebhookEndpointList" });

let cached: object | null = null;

/**
 * /openapi.json, generated from the same zod schemas that validate requests.
 * Query schemas that transform their input (cursors, numbers in strings) are
 * documented by their input: what a client sends.
 */
export function buildOpenApiDocument(): object {
  cached ??= generate();
  return cached;
}

function generate(): object {
  const registry = new OpenAPIRegistry();
  const bearer = registry.registerComponent("securitySchemes", "apiKey", {
    type: "http",
    scheme: "bearer",
    description: "An API key: `Authorization: Bearer tdk_...`. Create one with `npm run apikeys -- create`.",
  });
  const security = (scope: string) => [{ [bearer.name]: [scope] }];

  const problemJson = { "application/problem+json": { schema: Problem } };
  const problems = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, { description: PROBLEM_DESCRIPTIONS[c] ?? "Problem", content: problemJson }]));
  const json = (schema: z.ZodType) => ({ "application/json": { schema } });

  // Every keyed endpoint: no or bad key, wrong scope, over the key's rate limit, the database out of reach.
  const authProblems = problems(401, 403, 429, 503);
  const routes: RouteConfig[] = [
    {
      method: "post",
      path: "/v1/notifications",
      operationId: "sendNotification",
      summary: "Enqueue a notification to an entity",
      description:
        "Answers at once with the tracking id. With an Idempotency-Key header the call is safe to repeat: the same key with the same body answers the original id without enqueueing again; with a different body, 422.",
      security: security("producer"),
      request: {
        headers: z.object({ "Idempotency-Key": IdempotencyKeyHeader.optional() }),
        body: { content: json(SendNotification), required: true },
      },
      responses: {
        202: {
          description: "Enqueued (or, for a repeated Idempotency-Key, enqueued earlier): the tracking id; with `entityIds`, each entity's, in order",
          content: json(z.union([Accepted, NotificationsAccepted.meta({ id: "NotificationsAccepted" })])),
        },
        ...problems(400, 413, 415, 422),
        ...authProblems,
      },
    },
    {
      method: "get",
      path: "/v1/notifications",
      operationId: "listNotifications",
      summary: "List notifications, newest first, each as its latest view",
      description:
        "Pages like every list: pass `next` of one page as `after` for the following one; `next` is null on the last page. `cursor` is the deprecated former name of `after`.",
      security: security("reader"),
      request: { query: inputOf(ListNotificationsQuery) },
      responses: { 200: { description: "A page; `next` is the `after` of the following page, or null", content: json(List) }, ...problems(400), ...authProblems },
    },
    {
      method: "get",
      path: "/v1/notifications/{id}",
      operationId: "getNotification",
      summary: "The latest view of a notification, or with `asOf` the notification as it stood then",
      security: security("reader"),
      request: { params: inputOf(NotificationIdParams), query: inputOf(AsOfQuery) },
      responses: {
        200: {
          description: "The latest view, or `status: accepted` while no view is written yet; with `asOf`, the aggregate then (NotificationAsOf)",
          content: json(z.union([View, Pending, AsOf])),
        },
        ...problems(400, 404),
        ...authProblems,
      },
    },
    {
      method: "get",
      path: "/v1/notifications/{id}/events",
      operationId: "listNotificationRecords",
      summary: "Every record of a notification in every stream, with its handling history",
      security: security("reader"),
      request: { params: inputOf(NotificationIdParams) },
      responses: { 200: { description: "Records ordered by recorded_at, stream name, position", content: json(Records) }, ...problems(400, 404), ...authProblems },
    },
    {
      method: "get",
      path: "/v1/events",
      operationId: "readEventFeed",
      summary: "The notification event feed, resumable from a cursor, with long-polling",
      description: "Pages like every list: pass `next` as `after` to continue. The feed never ends, so `next` is always a cursor (at the end: the one given).",
      security: security("reader"),
      request: { query: inputOf(FeedQuery) },
      responses: { 200: { description: "Events after the cursor, and `next`, the cursor to continue from", content: json(Feed) }, ...problems(400), ...authProblems },
    },
    {
      method: "put",
      path: "/v1/entities/{id}",
      operationId: "putEntity",
      summary: "Create or change an entity (contact details and channel preferences)",
      security: security("entities"),
      request: {
        params: inputOf(EntityIdParams),
        headers: z.object({ "If-Match": z.string().optional().describe('Only if the entity is at this version (the ETag read before, `"3"`), or exists (`*`); else 412') }),
        body: { content: json(Entity), required: true },
      },
      responses: {
        201: { description: "Created: version 1, or the next version of a removed entity", content: json(EntityPut) },
        200: { description: "Changed (the next version), or unchanged (nothing recorded: same version, `changed` empty)", content: json(EntityPut) },
        ...problems(400, 412, 413, 415),
        ...authProblems,
      },
    },
    {
      method: "get",
      path: "/v1/entities/{id}",
      operationId: "getEntity",
      summary: "The entity as it is now",
      security: security("entities"),
      request: { params: inputOf(EntityIdParams) },
      responses: { 200: { description: "The current version", content: json(EntityVersion) }, ...problems(400, 404), ...authProblems },
    },
    {
      method: "get",
      path: "/v1/entities/{id}/history",
      operationId: "getEntityHistory",
      summary: "Every version of the entity, or the version in force at a time",
      security: security("entities"),
      request: { params: inputOf(EntityIdParams), query: inputOf(EntityHistoryQuery) },
      responses: {
        200: { description: "Without `at`: every version, oldest first. With `at`: the version in force then.", content: json(z.union([EntityHistory, EntityVersion])) },
        ...problems(400, 404),
        ...authProblems,
      },
    },
    {
      method: "get",
      path: "/v1/entities",
      operationId: "listEntities",
      summary: "List entities as they are now, by id, filtered by kind, address or text",
      description: "Pages like every list: pass `next` of one page as `after` for the following one; `next` is null on the last page. Removed entities are not listed.",
      security: security("entities"),
      request: { query: inputOf(ListEntitiesQuery) },
      responses: {
        200: { description: "A page of current versions; `next` is the `after` of the following page, or null", content: json(EntityList) },
        ...problems(400),
        ...authProblems,
      },
    },
    {
      method: "patch",
      path: "/v1/entities/{id}",
      operationId: "patchEntity",
      summary: "Change some fields of an entity (JSON Merge Patch)",
      description:
        'Merges the body into the entity (RFC 7396: null clears email or slack, preferences merges key by key) and validates the result like a PUT. With `If-Match: "<version>"` (the ETag of a read) the change is made only if the entity is still at that version, else 412. PUT takes If-Match the same way; every entity answer carries the version as ETag.',
      security: security("entities"),
      request: {
        params: inputOf(EntityIdParams),
        headers: z.object({ "If-Match": z.string().optional().describe('The ETag read before (`"3"`), several separated by commas, or `*`') }),
        body: { content: { "application/json": { schema: EntityPatch }, "application/merge-patch+json": { schema: EntityPatch } }, required: true },
      },
      responses: {
        200: { description: "Changed (the next version) or unchanged; ETag: the version", content: json(EntityPut) },
        ...problems(400, 404, 412, 413, 415),
        ...authProblems,
      },
    },
    {
      method: "post",
      path: "/v1/webhooks",
      operationId: "registerWebhook",
      summary: "Register a webhook endpoint for notification status changes",
      description:
        "Answers the endpoint's signing secret once (`whsec_...`): deliveries are signed by the Standard Webhooks specification (`webhook-id`, `webhook-timestamp`, `webhook-signature`). See docs/webhooks.md for the event types and their data.",
      security: security("admin"),
      request: { body: { content: json(RegisterWebhook), required: true } },
      responses: { 201: { description: "Registered; the secret is not shown again", content: json(WebhookCreated) }, ...problems(400, 413, 415), ...authProblems },
    },
    {
      method: "get",
      path: "/v1/webhooks",
      operationId: "listWebhooks",
      summary: "List webhook endpoints (active and disabled), without their secrets",
      description: "Pages like every list: pass `next` as `after`; `next` is null on the last page.",
      security: security("admin"),
      request: { query: inputOf(ListWebhooksQuery) },
      responses: { 200: { description: "A page of endpoints", content: json(WebhookList) }, ...problems(400), ...authProblems },
    },
    {
      method: "get",
      path: "/v1/webhooks/{id}",
      operationId: "getWebhook",
      summary: "A webhook endpoint, without its secret",
      security: security("admin"),
      request: { params: inputOf(WebhookIdParams) },
      responses: { 200: { description: "The endpoint", content: json(WebhookEndpoint) }, ...problems(400, 404), ...authProblems },
    },
    {
      method: "delete",
      path: "/v1/webhooks/{id}",
      operationId: "removeWebhook",
      summary: "Remove a webhook endpoint: nothing more is delivered to it",
      security: security("admin"),
      request: { params: inputOf(WebhookIdParams) },
      responses: { 204: { description: "Removed" }, ...problems(400, 404), ...authProblems },
    },
    {
      method: "get",
      path: "/healthz",
      operationId: "getHealth",
      summary: "Liveness",
      responses: { 200: { description: "The process is up", content: json(z.object({ status: z.literal("ok") })) } },
    },
    {
      method: "get",
      path: "/readyz",
      operationId: "getReadiness",
      summary: "Readiness: the database answers and every migration is applied",
      responses: {
        200: { description: "Ready", content: json(z.object({ status: z.literal("ready") })) },
        503: { description: "Not ready", content: json(z.looseObject({ status: z.string() })) },
      },
    },
    {
      method: "get",
      path: "/metrics",
      operationId: "getMetrics",
      summary: "Prometheus metrics",
      responses: { 200: { description: "Prometheus text exposition format", content: { "text/plain": { schema: z.string() } } } },
    },
    {
      method: "get",
      path: "/openapi.json",
      operationId: "getOpenApiDocument",
      summary: "This document",
      responses: { 200: { description: "OpenAPI 3.1", content: json(z.looseObject({})) } },
    },
  ];
  routes.push(...consoleOpenApiRoutes({ security, problems, authProblems, json, inputOf }));
  routes.push(...templateApiPaths({ security, problems, json, authProblems }), ...scheduleApiPaths({ security, problems, json, authProblems }));
  for (const r of routes) registry.registerPath(r);

  return new OpenApiGeneratorV31(registry.definitions).generateDocument({
    openapi: "3.1.0",
    // Relative: the API that serves this document (OpenAPI 3.1 resolves it against the document's URL).
    servers: [
      { url: "/", description: "The server this document was fetched from" },
      { url: "http://127.0.0.1:3000", description: "npm start with the default HOST and PORT" },
    ],
    info: {
      title: "tidings",
      version: "1",
      description: "Notifications on PostgreSQL append-only streams. Errors are RFC 7807 problem documents (application/problem+json). See docs/api.md.",
    },
  });
}

/** A request part's schema as the client writes it (before transforms). */
function inputOf<T extends z.ZodObject>(schema: T): z.ZodObject {
  const shape: Record<string, z.ZodType> = {};
  for (const [key, field] of Object.entries<z.ZodType>(schema.shape)) {
    shape[key] = describeInput(field);
  }
  return z.object(shape);
}

/** Transforming fields (numbers and cursors in query strings) are documented as the strings they read, deprecation kept. */
function describeInput(field: z.ZodType): z.ZodType {
  const optional = field.safeParse(undefined).success;
  if (containsTransform(field)) {
    const meta = field.meta();
    let text: z.ZodType = field.description ? z.string().describe(field.description) : z.string();
    if (optional) text = text.optional();
    // `param` is zod-to-openapi's metadata for the parameter object itself (OpenAPI's Parameter.deprecated).
    return meta?.deprecated ? text.meta({ deprecated: true, param: { deprecated: true } } as z.GlobalMeta) : text;
  }
  return field;
}

function containsTransform(field: z.ZodType): boolean {
  const def = (field as { def?: { type?: string; innerType?: z.ZodType; in?: z.ZodType; out?: z.ZodType } }).def;
  if (!def) return false;
  if (def.type === "pipe" || def.type === "transform") return true;
  return def.innerType ? containsTransform(def.innerType) : false;
}

const PROBLEM_DESCRIPTIONS: Record<number, string> = {
  400: "Invalid request: malformed JSON, a field or parameter that does not fit (named in `errors`)",
  401: "No API key, an unknown one, or a revoked one",
  403: "The API key lacks the scope this endpoint needs (`requiredScope`)",
  404: "Not found",
  413: "Request body larger than 256 kB",
  412: "If-Match names a version that is no longer current (`precondition-failed`; the current one in ETag): read again and repeat",
  415: "Content-Type is not application/json",
  422: "The Idempotency-Key was already used with a different request",
  429: "Over the API key's rate limit (`rate-limited`, with Retry-After and the RateLimit-* fields), or, for GET /v1/events with wait, too many requests waiting already (`too-many-waits`, with Retry-After)",
  503: "The database is out of reach (`database-unavailable`); retry after Retry-After seconds",
};
