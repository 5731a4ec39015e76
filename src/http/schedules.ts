import type { RouteConfig } from "@asteasolutions/zod-to-openapi";
import { z } from "zod";
import { cancelScheduledNotification } from "../notification/schedule";
import { route, type RouteContext, type RouteDef } from "./routes";
import { NotificationIdParams } from "./schemas";

/** POST /v1/notifications/:id/cancel: a scheduled notification ended before its time (docs/templates.md, "Scheduling"). */

export const CancelledResponse = z
  .object({ id: z.uuid(), status: z.literal("cancelled"), sendAt: z.string().describe("When it would have been sent") })
  .meta({ id: "NotificationCancelled" });

export function scheduleRoutes(ctx: RouteContext): RouteDef[] {
  return [
    route(ctx, {
      method: "post",
      path: "/v1/notifications/:id/cancel",
      scope: "producer",
      params: NotificationIdParams,
      async handle({ params: { id }, principal }, res) {
        const { sendAt } = await cancelScheduledNotification(ctx.db, id, `api key ${principal.name} (${principal.keyId})`);
        res.json({ id, status: "cancelled", sendAt });
      },
    }),
  ];
}

export function scheduleApiPaths(h: {
  security(scope: string): RouteConfig["security"];
  problems(...codes: number[]): RouteConfig["responses"];
  json(schema: z.ZodType): { "application/json": { schema: z.ZodType } };
  authProblems: RouteConfig["responses"];
}): RouteConfig[] {
  return [
    {
      method: "post",
      path: "/v1/notifications/{id}/cancel",
      operationId: "cancelNotification",
      summary: "Cancel a scheduled notification before its time",
      description:
        "Ends a notification sent with `sendAt` or `delay` as `cancelled` (an outcome, no alert). 409 once it was sent, when it is already cancelled, or when it was not scheduled.",
      security: h.security("producer"),
      request: { params: z.strictObject({ id: z.string().describe("the tracking id") }) },
      responses: { 200: { description: "Cancelled", content: h.json(CancelledResponse) }, ...h.problems(400, 404, 409), ...h.authProblems },
    },
  ];
}
