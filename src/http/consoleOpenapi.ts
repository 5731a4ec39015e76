import type { RouteConfig } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import {
  ActionBody,
  ActionReportResponse,
  ActionVerbParams,
  EventsStreamQuery,
  FailuresQuery,
  FailuresResponse,
  HealthResponse,
  NotificationAsOf,
  ResendBody,
  ResendReportResponse,
  TemplateListQuery,
  TemplateListResponse,
  WhoAmI,
} from "./consoleSchemas";

/** What src/http/openapi.ts hands over to describe a route the way it describes its own. */
export interface OpenApiHelpers {
  security(scope: string): RouteConfig["security"];
  problems(...codes: number[]): RouteConfig["responses"];
  authProblems: RouteConfig["responses"];
  json(schema: z.ZodType): Record<string, { schema: z.ZodType }>;
  inputOf(schema: z.ZodObject): z.ZodObject;
}

export const AsOf = NotificationAsOf.meta({ id: "NotificationAsOf" });
const Failures = FailuresResponse.meta({ id: "FailuresWaiting" });
const ActionReport = ActionReportResponse.meta({ id: "ActionReport" });
const ResendReport = ResendReportResponse.meta({ id: "ResendReport" });
const Health = HealthResponse.meta({ id: "Health" });
const TemplateList = TemplateListResponse.meta({ id: "TemplateList" });

/** The endpoints the operator console added (src/http/console.ts, eventsStream.ts, adminActions.ts); GET /v1/notifications/{id}?asOf is in openapi.ts. */
export function consoleOpenApiRoutes(h: OpenApiHelpers): RouteConfig[] {
  const { security, problems, authProblems, json, inputOf } = h;
  return [
    {
      method: "get",
      path: "/v1/events/stream",
      operationId: "streamEvents",
      summary: "The notification event feed as server-sent events, resuming from Last-Event-ID",
      description:
        "The same gap-safe feed as GET /v1/events, as `text/event-stream`: each event's `id` is its feed cursor, `event` its type, `data` the feed event as JSON. A reconnecting client sends Last-Event-ID and resumes right after it. Counts against the key's cap of waiting requests.",
      security: security("reader"),
      request: { query: inputOf(EventsStreamQuery), headers: z.object({ "Last-Event-ID": z.string().optional() }) },
      responses: { 200: { description: "An endless stream of events", content: { "text/event-stream": { schema: z.string() } } }, ...problems(400), ...authProblems },
    },
    {
      method: "get",
      path: "/v1/admin/failures",
      operationId: "listFailuresWaiting",
      summary: "What waits for an operator: failed records grouped by channel and error, and records stuck running",
      security: security("reader"),
      request: { query: inputOf(FailuresQuery) },
      responses: { 200: { description: "Failures and stuck records", content: json(Failures) }, ...problems(400), ...authProblems },
    },
    {
      method: "post",
      path: "/v1/admin/actions/{verb}",
      operationId: "runRepairAction",
      summary: "Re-drive, archive or cancel records, as `npm run redrive` does: a dry run unless `execute`, which needs a reason",
      security: security("admin"),
      request: { params: inputOf(ActionVerbParams), body: { content: json(ActionBody), required: true } },
      responses: { 200: { description: "What would change (dry run) or what changed", content: json(ActionReport) }, ...problems(400, 404, 409, 413, 415), ...authProblems },
    },
    {
      method: "post",
      path: "/v1/admin/resend",
      operationId: "resendNotification",
      summary: "Resend a notification's failed channels to the entity's current details: a dry run unless `execute`, which needs a reason",
      security: security("admin"),
      request: { body: { content: json(ResendBody), required: true } },
      responses: {
        200: { description: "What would be resent (dry run) or the request written", content: json(ResendReport) },
        ...problems(400, 404, 409, 413, 415),
        ...authProblems,
      },
    },
    {
      method: "get",
      path: "/v1/me",
      operationId: "getCaller",
      summary: "The API key making the request: its name and scopes",
      security: security("reader"),
      responses: { 200: { description: "The key", content: json(WhoAmI) }, ...authProblems },
    },
    {
      method: "get",
      path: "/v1/health",
      operationId: "getServiceHealth",
      summary: "Workers and heartbeats, queue depth per task, readers' lag, failures waiting, stream sizes",
      security: security("reader"),
      responses: { 200: { description: "The service's health now", content: json(Health) }, ...authProblems },
    },
    {
      method: "get",
      path: "/v1/templates",
      operationId: "listTemplates",
      summary: "Every template by key, with its current version",
      security: security("reader"),
      request: { query: inputOf(TemplateListQuery) },
      responses: { 200: { description: "A page of templates", content: json(TemplateList) }, ...problems(400), ...authProblems },
    },
  ];
}
