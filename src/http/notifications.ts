import type { Response } from "express";
import { z } from "zod";
import { inTransaction } from "../db/database";
import { NotFoundError } from "../errors/errors";
import { latestViewJson, loadNotification } from "../notification/projection";
import { AsOfQuery } from "./consoleSchemas";
import { Streams } from "../notification/streams";
import { EnqueueBatcher, enqueueToMany } from "./enqueue";
import { listNotifications, notificationRecords, pendingNotification } from "./reads";
import { route, type RouteContext, type RouteDef } from "./routes";
import { IdempotencyKeyHeader, ListNotificationsQuery, NotificationIdParams, SendNotificationBody } from "./schemas";
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

  /** The aggregate as it stood at `asOf`: the nearest snapshot at or before then, plus the events after it up to then. */
  async function notificationAsOf(id: string, asOf: string) {
    const at = new Date(asOf);
    const loaded = await inTransaction(db, "reader", (tx) => loadNotification(tx, id, { time: at }));
    if (!loaded.aggregate) {
      const known = await inTransaction(db, "reader", (tx) => pendingNotification(tx, id));
      if (!known) throw new NotFoundError(`no notification with id ${id}`);
      throw new NotFoundError(`notification ${id} had no events yet at ${at.toISOString()} (it was requested at ${known.requestedAt})`);
    }
    return { id, asOf: at.toISOString(), aggregate: loaded.aggregate, fromSnapshot: loaded.snapshot?.asOfPosition ?? null, eventsApplied: loaded.eventsApplied };
  }

  return [
    route(ctx, {
      method: "post",
      path: "/v1/notifications",
      scope: "producer",
      body: SendNotificationBody,
      async handle({ body: op, principal, req }, res) {
        const header = req.get("idempotency-key");
        const idempotencyKey =
          header === undefined ? undefined : parseInput(z.object({ "Idempotency-Key": IdempotencyKeyHeader }), { "Idempotency-Key": header }, "header")["Idempotency-Key"];
        if (op.entityIds !== undefined) {
          // Many recipients: one transaction of their own, one tracking id each (src/http/enqueue.ts).
          const many = await enqueueToMany(db, op, idempotencyKey, principal);
          if (many.created) for (let i = 0; i < many.notifications.length; i++) ctx.metrics?.notificationEnqueued();
          if (!many.created) res.set("Idempotent-Replayed", "true");
          res.status(202).json({ status: "accepted", notifications: many.notifications.map((n) => ({ ...n, links: notificationLinks(n.id) })) });
          return;
        }
        const { id, created } = await batcher.enqueue({ ...op, entityId: op.entityId! }, idempotencyKey, principal);
        if (created) ctx.metrics?.notificationEnqueued();
        if (!created) res.set("Idempotent-Replayed", "true");
        const links = notificationLinks(id);
        res.status(202).location(links.self).json({ id, status: "accepted", links });
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/notifications",
      scope: "reader",
      query: ListNotificationsQuery,
      async handle({ query: { after, cursor, ...filter } }, res) {
        // `cursor` is the deprecated name of `after` (docs/api.md, "Paging").
        const page = await inTransaction(db, "reader", (tx) => listNotifications(tx, { ...filter, cursor: after ?? cursor }));
        sendRawJson(res, 200, `{"items":[${page.itemsJson.join(",")}],"next":${JSON.stringify(page.next)},"viewsBehind":${JSON.stringify(page.viewsBehind)}}`);
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/notifications/:id",
      scope: "reader",
      params: NotificationIdParams,
      query: AsOfQuery,
      async handle({ params: { id }, query: { asOf } }, res) {
        if (asOf !== undefined) {
          res.json(await notificationAsOf(id, asOf));
          return;
        }
        const found = await inTransaction(db, "reader", async (tx) => {
          const view = await latestViewJson(tx, id);
          if (view !== null) return view;
          const pending = await pendingNotification(tx, id);
          return pending && JSON.stringify(pending);
        });
        if (!found) throw new NotFoundError(`no notification with id ${id}`);
        sendRawJson(res, 200, found);
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/notifications/:id/events",
      scope: "reader",
      params: NotificationIdParams,
      async handle({ params: { id } }, res) {
        const records = await inTransaction(db, "reader", (tx) => notificationRecords(tx, id));
        // Only a notification's records: an id no client operation carries is not one.
        if (!records.some((r) => r.stream === Streams.notificationClientOperations)) {
          throw new NotFoundError(`no notification with id ${id}`);
        }
        res.json({ id, records });
      },
    }),
  ];
}
