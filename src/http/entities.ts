import { getEntity, getEntityHistory, putEntity, type EntityVersion } from "../entities/entity.repository";
import { inTransaction } from "../db/database";
import { NotFoundError } from "../errors/errors";
import { route, type RouteContext, type RouteDef } from "./routes";
import { EntityBody, EntityHistoryQuery, EntityIdParams } from "./schemas";

function versionJson(v: EntityVersion) {
  return { entity: v.entity, version: v.version, recordedAt: v.recordedAt.toISOString(), changed: v.changed, changedBy: v.changedBy };
}

export function entityRoutes(ctx: RouteContext): RouteDef[] {
  const { db } = ctx;
  return [
    route(ctx, {
      method: "put",
      path: "/v1/entities/:id",
      scope: "entities",
      params: EntityIdParams,
      body: EntityBody,
      async handle({ params: { id }, body, principal }, res) {
        const { version, created, changed } = await putEntity(db, id, body, `api key ${principal.name} (${principal.keyId})`);
        if (created) res.location(`/v1/entities/${encodeURIComponent(id)}`);
        res.status(created ? 201 : 200).json({ ...versionJson(version), result: created ? "created" : changed ? "changed" : "unchanged" });
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/entities/:id",
      scope: "entities",
      params: EntityIdParams,
      async handle({ params: { id } }, res) {
        const version = await inTransaction(db, "reader", (tx) => getEntity(tx, id));
        if (!version) throw new NotFoundError(`no entity with id "${id}"`);
        res.json(versionJson(version));
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
    }),
  ];
}
