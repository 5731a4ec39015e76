import { sql, type RawBuilder } from "kysely";
import { inTransaction, type Db, type Executor } from "../db/database";
import { appendOne } from "../streams/append";
import { streamTable } from "../streams/names";
import { EntityStreams } from "./entity.streams";
import { findRecords, RECORD_COLUMNS_R, toRecord, type RecordRow } from "../streams/read";
import type { StreamRecord } from "../streams/interfaces";
import { Entity, EntityChangedEvent, EntityInput, EntityRecordTypes, EntityRemovedEvent, entityId } from "./entity.schemas";

export interface EntityVersion {
  entity: Entity;
  /**
   * Which version of this entity: 1 for its first record in entity.events,
   * then one more for each change or removal of it (a re-created entity
   * continues the count). What people and the API see.
   */
  version: number;
  /** Where the version is in entity.events: what notifications record as `entityVersion`. */
  position: number;
  recordedAt: Date;
  changed: string[];
  changedBy: string;
}

function toVersion(record: StreamRecord, version: number): EntityVersion | null {
  if (record.type === EntityRecordTypes.EntityRemovedEvent) return null;
  const event = EntityChangedEvent.parse(record.payload);
  return { entity: event.entity, version, position: record.position, recordedAt: record.recordedAt, changed: event.changed, changedBy: event.changedBy };
}

/**
 * The newest record of each entity in `where`, with its per-entity version:
 * the count of the entity's records up to it (an index-only count on
 * entity.events (id, position)), taken once per entity, not once per record.
 */
async function latestWithVersion(db: Executor, where: RawBuilder<unknown>): Promise<Array<{ record: StreamRecord; version: number }>> {
  const table = streamTable(EntityStreams.events);
  const { rows } = await sql<RecordRow & { version: number }>`
    select l.*, (select count(*)::int from ${table} c where c.id = l.id and c.position <= l.position) as version
    from (select distinct on (r.id) ${RECORD_COLUMNS_R} from ${table} r where ${where} order by r.id, r.position desc) l`.execute(db);
  return rows.map((row) => ({ record: toRecord(EntityStreams.events, row), version: row.version }));
}

/** The entity as of now, or as it was at `asOf` (null: unknown, or removed at that time). */
export async function getEntity(db: Executor, id: string, asOf?: Date): Promise<EntityVersion | null> {
  const [latest] = await latestWithVersion(db, asOf ? sql`r.id = ${id} and r.recorded_at <= ${asOf}` : sql`r.id = ${id}`);
  return latest ? toVersion(latest.record, latest.version) : null;
}

/** The current version of each of these entities, in one query (unknown and removed ones are absent). */
export async function getEntities(db: Executor, ids: readonly string[]): Promise<Map<string, EntityVersion>> {
  const versions = new Map<string, EntityVersion>();
  if (ids.length === 0) return versions;
  for (const { record, version: number } of await latestWithVersion(db, sql`r.id = any(${[...ids]}::text[])`)) {
    const version = toVersion(record, number);
    if (version) versions.set(record.id, version);
  }
  return versions;
}

/** Every version of the entity, oldest first, numbered from 1 (removals included, as records of their own type). */
export async function getEntityHistory(db: Executor, id: string): Promise<Array<{ version: number; position: number; recordedAt: Date; type: string; payload: unknown }>> {
  const records = await findRecords(db, EntityStreams.events, { ids: [id], limit: null });
  return records.map((r, i) => ({ version: i + 1, position: r.position, recordedAt: r.recordedAt, type: r.type, payload: r.payload }));
}

const FIELDS = ["kind", "name", "email", "slack", "preferences", "locale"] as const;

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
    // A new entity changed every field it has (an optional one it leaves out, such as `locale`, is not listed).
    const changed = before ? FIELDS.filter((f) => JSON.stringify(before.entity[f]) !== JSON.stringify(entity[f])) : FIELDS.filter((f) => entity[f] !== undefined);
    // Nothing new: the version stays, and this PUT changed nothing.
    if (before && changed.length === 0) return { version: { ...before, changed: [] }, created: false, changed: false };
    const payload = EntityChangedEvent.parse({ entity, changed, changedBy });
    const appended = await appendOne(tx, EntityStreams.events, { id, type: EntityRecordTypes.EntityChangedEvent, payload });
    // Counted, not before.version + 1: a removed entity has no `before` but keeps its count.
    const { rows } = await sql<{ version: number; recorded_at: Date }>`
      select count(*)::int as version, max(recorded_at) filter (where position = ${appended.position}) as recorded_at
      from ${streamTable(EntityStreams.events)} where id = ${id} and position <= ${appended.position}`.execute(tx);
    return {
      version: { entity, version: rows[0]!.version, position: appended.position, recordedAt: rows[0]!.recorded_at, changed, changedBy },
      created: !before,
      changed: true,
    };
  });
}

export async function removeEntity(db: Db, id: string, removedBy: string): Promise<boolean> {
  return inTransaction(db, "entity_admin", async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended(${`entity ${id}`}, 0))`.execute(tx);
    if (!(await getEntity(tx, id))) return false;
    await appendOne(tx, EntityStreams.events, {
      id,
      type: EntityRecordTypes.EntityRemovedEvent,
      payload: EntityRemovedEvent.parse({ entityId: id, removedBy }),
    });
    return true;
  });
}
