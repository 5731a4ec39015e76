import type { Response } from "express";
import { z } from "zod";
import { inTransaction } from "../db/database";
import { NotFoundError } from "../errors/errors";
import { latestViewJson } from "../notification/projection";
import { Streams } from "../notification/streams";
import { principalOf, requireScope } from "./auth";
import { jsonBody } from "./body";
import { EnqueueBatcher } from "./enqueue";
import { listNotifications, notificationRecords, pendingNotification } from "./reads";
import type { RouteContext, RouteDef } from "./routes";
import { IdempotencyKeyHeader, ListNotificationsQuery, NoQuery, NotificationIdParams, SendNotificationBody } from "./schemas";
import { parseInput } from "./validation";

export const notificationLinks = (id: string) => ({
  self: `/v1/notifications/${id}`,
  events: `/v1/notifications/${id}/events`,
});

function sendRawJson(res: Response, status: number, json: string): void {
  res.status(status).type("application/json").send(json);
}

export function notificationRoutes(ctx: RouteContext): RouteDef[] {
  const { db } = ctx;
  // One shared commit at a time: measured best (npm run bench, BENCH_SECTIONS=http: 1,785 requests/s
  // with one, 1,570-1,630 with two, 1,316 with four); the next batch gathers while it commits.
  const batcher = new EnqueueBatcher(db, { maxBatch: 200, parallel: 1, logger: ctx.logger });
  return [
    {
      method: "post",
      path: "/v1/notifications",
      handlers: [
        requireScope(ctx.gate, "producer"),
        jsonBody(ctx.bodyLimit),
        async (req, res) => {
          parseInput(NoQuery, req.query, "query");
          const header = req.get("idempotency-key");
          const idempotencyKey =
            header === undefined ? undefined : parseInput(z.object({ "Idempotency-Key": IdempotencyKeyHeader }), { "Idempotency-Key": header }, "header")["Idempotency-Key"];
          const op = parseInput(SendNotificationBody, req.body, "body");
          const { id, created } = await batcher.enqueue(op, idempotencyKey, principalOf(res));
          if (created) ctx.metrics?.notificationEnqueued();
          if (!created) res.set("Idempotent-Replayed", "true");
          const links = notificationLinks(id);
          res.status(202).location(links.self).json({ id, status: "accepted", links });
        },
      ],
    },
    {
      method: "get",
      path: "/v1/notifications",
      handlers: [
        requireScope(ctx.gate, "reader"),
        async (req, res) => {
          const { after, cursor, ...filter } = parseInput(ListNotificationsQuery, req.query, "query");
          // `cursor` is the deprecated name of `after` (docs/api.md, "Paging").
          const page = await inTransaction(db, "reader", (tx) => listNotifications(tx, { ...filter, cursor: after ?? cursor }));
          sendRawJson(res, 200, `{"items":[${page.itemsJson.join(",")}],"next":${JSON.stringify(page.next)}}`);
        },
      ],
    },
    {
      method: "get",
      path: "/v1/notifications/:id",
      handlers: [
        requireScope(ctx.gate, "reader"),
        async (req, res) => {
          const { id } = parseInput(NotificationIdParams, req.params, "path");
          parseInput(NoQuery, req.query, "query");
          const found = await inTransaction(db, "reader", async (tx) => {
            const view = await latestViewJson(tx, id);
            if (view !== null) return view;
            const pending = await pendingNotification(tx, id);
            return pending && JSON.stringify(pending);
          });
          if (!found) throw new NotFoundError(`no notification with id ${id}`);
          sendRawJson(res, 200, found);
        },
      ],
    },
    {
      method: "get",
      path: "/v1/notifications/:id/events",
      handlers: [
        requireScope(ctx.gate, "reader"),
        async (req, res) => {
          const { id } = parseInput(NotificationIdParams, req.params, "path");
          parseInput(NoQuery, req.query, "query");
          const records = await inTransaction(db, "reader", (tx) => notificationRecords(tx, id));
          // Only a notification's records: an id no client operation carries is not one.
          if (!records.some((r) => r.stream === Streams.notificationClientOperations)) {
            throw new NotFoundError(`no notification with id ${id}`);
          }
          res.json({ id, records });
        },
      ],
    },
  ];
}
