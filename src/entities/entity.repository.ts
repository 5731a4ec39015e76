import { sql } from "kysely";
import { inTransaction, type Db, type Executor } from "../db/database";
import { appendOne } from "../streams/append";
import { Streams } from "../streams/names";
import { findRecords, getLatestById, getLatestByIds } from "../streams/read";
import type { StreamRecord } from "../streams/interfaces";
import { Entity, EntityChangedEvent, EntityInput, EntityRecordTypes, EntityRemovedEvent, entityId } from "./entity.schemas";

export interface EntityVersion {
  entity: Entity;
  position: number;
  recordedAt: Date;
  changed: string[];
  changedBy: string;
}

function toVersion(record: StreamRecord): EntityVersion | null {
  if (record.type === EntityRecordTypes.EntityRemovedEvent) return null;
  const event = EntityChangedEvent.parse(record.payload);
  return { entity: event.entity, position: record.position, recordedAt: record.recordedAt, changed: event.changed, changedBy: event.changedBy };
}

/** The entity as of now, or as it was at `asOf` (null: unknown, or removed at that time). */
export async function getEntity(db: Executor, id: string, asOf?: Date): Promise<EntityVersion | null> {
  const latest = await getLatestById(db, Streams.entityEvents, id, { recordedAtOrBefore: asOf });
  return latest ? toVersion(latest) : null;
}

/** The current version of each of these entities, in one query (unknown and removed ones are absent). */
export async function getEntities(db: Executor, ids: readonly string[]): Promise<Map<string, EntityVersion>> {
  const versions = new Map<string, EntityVersion>();
  for (const [id, record] of await getLatestByIds(db, Streams.entityEvents, ids)) {
    const version = toVersion(record);
    if (version) versions.set(id, version);
  }
  return versions;
}

/** Every version of the entity, oldest first (removals included as null entities). */
export async function getEntityHistory(db: Executor, id: string): Promise<Array<{ position: number; recordedAt: Date; type: string; payload: unknown }>> {
  const records = await findRecords(db, Streams.entityEvents, { ids: [id] });
  return records.map((r) => ({ position: r.position, recordedAt: r.recordedAt, type: r.type, payload: r.payload }));
}

const FIELDS = ["kind", "name", "email", "slack", "preferences"] as const;

/**
 * Record the entity's new state as an EntityChangedEvent, unless nothing
 * changed. Concurrent writers of one entity are serialised so `changed` is
 * computed against the version really before it.
 */
export async function putEntity(db: Db, id: string, input: EntityInput, changedBy: string): Promise<{ version: EntityVersion; created: boolean; changed: boolean }> {
  entityId.parse(id);
  const parsed = EntityInput.parse(input);
  return inTransaction(db, "entity_admin", async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended(${`entity ${id}`}, 0))`.execute(tx);
    const before = await getEntity(tx, id);
    const entity: Entity = { id, ...parsed };
    const changed = before
      ? FIELDS.filter((f) => JSON.stringify(before.entity[f]) !== JSON.stringify(entity[f]))
      : [...FIELDS];
    if (before && changed.length === 0) return { version: before, created: false, changed: false };
    const payload = EntityChangedEvent.parse({ entity, changed, changedBy });
    const appended = await appendOne(tx, Streams.entityEvents, { id, type: EntityRecordTypes.EntityChangedEvent, payload });
    return {
      version: { entity, position: appended.position, recordedAt: new Date(), changed, changedBy },
      created: !before,
      changed: true,
    };
  });
}

export async function removeEntity(db: Db, id: string, removedBy: string): Promise<boolean> {
  return inTransaction(db, "entity_admin", async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended(${`entity ${id}`}, 0))`.execute(tx);
    if (!(await getEntity(tx, id))) return false;
    await appendOne(tx, Streams.entityEvents, {
      id,
      type: EntityRecordTypes.EntityRemovedEvent,
      payload: EntityRemovedEvent.parse({ entityId: id, removedBy }),
    });
    return true;
  });
}
