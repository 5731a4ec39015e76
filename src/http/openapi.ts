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
      summary: "The latest view of a notification",
      security: security("reader"),
      request: { params: inputOf(NotificationIdParams) },
      responses: {
        200: { description: "The latest view, or `status: accepted` while no view is written yet", content: json(z.union([View, Pending])) },
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
      request: { params: inputOf(EntityIdParams), body: { content: json(Entity), required: true } },
      responses: {
        201: { description: "Created: version 1, or the next version of a removed entity", content: json(EntityPut) },
        200: { description: "Changed (the next version), or unchanged (nothing recorded: same version, `changed` empty)", content: json(EntityPut) },
        ...problems(400, 413, 415),
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
  415: "Content-Type is not application/json",
  422: "The Idempotency-Key was already used with a different request",
  429: "Over the API key's rate limit (`rate-limited`, with Retry-After and the RateLimit-* fields), or, for GET /v1/events with wait, too many requests waiting already (`too-many-waits`, with Retry-After)",
  503: "The database is out of reach (`database-unavailable`); retry after Retry-After seconds",
};
