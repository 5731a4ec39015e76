import { getEntity, getEntityHistory, putEntity, type EntityVersion } from "../entities/entity.repository";
import { inTransaction } from "../db/database";
import { NotFoundError } from "../errors/errors";
import { principalOf, requireScope } from "./auth";
import { jsonBody } from "./body";
import type { RouteContext, RouteDef } from "./routes";
import { EntityBody, EntityHistoryQuery, EntityIdParams, NoQuery } from "./schemas";
import { parseInput } from "./validation";

function versionJson(v: EntityVersion) {
  return { entity: v.entity, version: v.version, recordedAt: v.recordedAt.toISOString(), changed: v.changed, changedBy: v.changedBy };
}

export function entityRoutes(ctx: RouteContext): RouteDef[] {
  const { db } = ctx;
  return [
    {
      method: "put",
      path: "/v1/entities/:id",
      handlers: [
        requireScope(ctx.gate, "entities"),
        jsonBody(ctx.bodyLimit),
        async (req, res) => {
          const { id } = parseInput(EntityIdParams, req.params, "path");
          parseInput(NoQuery, req.query, "query");
          const input = parseInput(EntityBody, req.body, "body");
          const principal = principalOf(res);
          const { version, created, changed } = await putEntity(db, id, input, `api key ${principal.name} (${principal.keyId})`);
          if (created) res.location(`/v1/entities/${encodeURIComponent(id)}`);
          res.status(created ? 201 : 200).json({ ...versionJson(version), result: created ? "created" : changed ? "changed" : "unchanged" });
        },
      ],
    },
    {
      method: "get",
      path: "/v1/entities/:id",
      handlers: [
        requireScope(ctx.gate, "entities"),
        async (req, res) => {
          const { id } = parseInput(EntityIdParams, req.params, "path");
          parseInput(NoQuery, req.query, "query");
          const version = await inTransaction(db, "reader", (tx) => getEntity(tx, id));
          if (!version) throw new NotFoundError(`no entity with id "${id}"`);
          res.json(versionJson(version));
        },
      ],
    },
    {
      method: "get",
      path: "/v1/entities/:id/history",
      handlers: [
        requireScope(ctx.gate, "entities"),
        async (req, res) => {
          const { id } = parseInput(EntityIdParams, req.params, "path");
          const { at } = parseInput(EntityHistoryQuery, req.query, "query");
          if (at !== undefined) {
            const version = await inTransaction(db, "reader", (tx) => getEntity(tx, id, new Date(at)));
            if (!version) throw new NotFoundError(`entity "${id}" did not exist at ${at}`);
            res.json(versionJson(version));
            return;
          }
          const history = await inTransaction(db, "reader", (tx) => getEntityHistory(tx, id));
          if (history.length === 0) throw new NotFoundError(`no entity with id "${id}"`);
          res.json({
            id,
            versions: history.map((h) => ({ version: h.version, position: h.position, recordedAt: h.recordedAt.toISOString(), type: h.type, payload: h.payload })),
          });
        },
      ],
    },
  ];
}
