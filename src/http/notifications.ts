import { createHash } from "node:crypto";
import type { Response } from "express";
import { sql } from "kysely";
import { z } from "zod";
import type { ApiPrincipal } from "../auth/apiKeys";
import { inTransaction, type Db } from "../db/database";
import { NotFoundError } from "../errors/errors";
import { enqueueNotificationInTransaction } from "../notification/enqueue";
import { trackingIdForIdempotencyKey } from "../notification/ids";
import { latestViewJson } from "../notification/projection";
import { Streams } from "../streams/names";
import { principalOf, requireScope } from "./auth";
import { jsonBody } from "./body";
import { IdempotencyKeyReusedError } from "./problem";
import { listNotifications, notificationRecords, pendingNotification } from "./reads";
import type { ApiContext, RouteDef } from "./routes";
import {
  IdempotencyKeyHeader,
  ListNotificationsQuery,
  NoQuery,
  NotificationIdParams,
  SendNotificationBody,
} from "./schemas";
import { parseInput } from "./validation";

type SendNotification = z.output<typeof SendNotificationBody>;

export const notificationLinks = (id: string) => ({
  self: `/v1/notifications/${id}`,
  events: `/v1/notifications/${id}/events`,
});

/** JSON with object keys sorted at every level: equal requests hash equally whatever their key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

export function requestHash(op: SendNotification): Buffer {
  return createHash("sha256").update(canonicalJson(op)).digest();
}

/**
 * Enqueue as the client actor. With an idempotency key, the key is recorded
 * in the same transaction as the client operation; its primary key makes a
 * concurrent duplicate wait for the first transaction and then find its row.
 * The request is compared as validated (defaults applied, key order ignored).
 */
export async function enqueueIdempotently(
  db: Db,
  op: SendNotification,
  idempotencyKey: string | undefined,
  principal: ApiPrincipal | null,
): Promise<{ id: string; created: boolean }> {
  if (idempotencyKey === undefined) {
    const enqueued = await inTransaction(db, "client", (tx) => enqueueNotificationInTransaction(tx, op));
    return { id: enqueued.trackingId, created: enqueued.created };
  }
  const hash = requestHash(op);
  return inTransaction(db, "client", async (tx) => {
    const inserted = await sql`
      insert into api.idempotency_keys (key, request_sha256, tracking_id, api_key_id)
      values (${idempotencyKey}, ${hash}, ${trackingIdForIdempotencyKey(idempotencyKey)}, ${principal?.keyId ?? null})
      on conflict (key) do nothing
      returning key`.execute(tx);
    if (inserted.rows.length === 0) {
      const { rows } = await sql<{ request_sha256: Buffer; tracking_id: string }>`
        select request_sha256, tracking_id from api.idempotency_keys where key = ${idempotencyKey}`.execute(tx);
      const original = rows[0]!;
      if (!original.request_sha256.equals(hash)) throw new IdempotencyKeyReusedError(idempotencyKey, original.tracking_id);
      return { id: original.tracking_id, created: false };
    }
    const enqueued = await enqueueNotificationInTransaction(tx, { ...op, idempotencyKey });
    return { id: enqueued.trackingId, created: enqueued.created };
  });
}

function sendRawJson(res: Response, status: number, json: string): void {
  res.status(status).type("application/json").send(json);
}

export function notificationRoutes(ctx: ApiContext): RouteDef[] {
  const { db } = ctx;
  return [
    {
      method: "post",
      path: "/v1/notifications",
      handlers: [
        requireScope(db, "producer"),
        jsonBody(ctx.bodyLimit),
        async (req, res) => {
          parseInput(NoQuery, req.query, "query");
          const header = req.get("idempotency-key");
          const idempotencyKey =
            header === undefined ? undefined : parseInput(z.object({ "Idempotency-Key": IdempotencyKeyHeader }), { "Idempotency-Key": header }, "header")["Idempotency-Key"];
          const op = parseInput(SendNotificationBody, req.body, "body");
          const { id, created } = await enqueueIdempotently(db, op, idempotencyKey, principalOf(res));
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
        requireScope(db, "reader"),
        async (req, res) => {
          const query = parseInput(ListNotificationsQuery, req.query, "query");
          const page = await inTransaction(db, "reader", (tx) => listNotifications(tx, query));
          sendRawJson(res, 200, `{"items":[${page.itemsJson.join(",")}],"next":${JSON.stringify(page.next)}}`);
        },
      ],
    },
    {
      method: "get",
      path: "/v1/notifications/:id",
      handlers: [
        requireScope(db, "reader"),
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
        requireScope(db, "reader"),
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
