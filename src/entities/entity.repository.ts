import { sql, type RawBuilder } from "kysely";
import { inTransaction, type Db, type Executor, type Tx } from "../db/database";
import { ConflictError, NotFoundError, ValidationError } from "../errors/errors";
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

/** The entity's top-level fields, from its schema: a field added there is compared and patched like the others. */
const FIELDS = Object.keys(EntityInput.shape) as Array<keyof EntityInput>;

/**
 * A conditional write (If-Match) whose expected version is not the entity's
 * current one: someone else changed it since the writer read it. `current`
 * is null when the entity does not exist (any If-Match then fails).
 */
export class StaleVersionError extends ConflictError {
  constructor(
    readonly entityId: string,
    readonly current: number | null,
  ) {
    super(
      current === null
        ? `entity "${entityId}" does not exist, so it cannot be at the version the request expects`
        : `entity "${entityId}" is at version ${current}, not the version the request expects: read it again (GET) and repeat the change`,
    );
  }
}

/**
 * Which current versions a write accepts (If-Match): `any` (\`*\`: the entity
 * must exist) or a list of version numbers; undefined: unconditional.
 */
export type ExpectedVersion = "any" | readonly number[];

function checkExpected(id: string, before: EntityVersion | null, expected: ExpectedVersion | undefined): void {
  if (expected === undefined) return;
  if (!before) throw new StaleVersionError(id, null);
  if (expected !== "any" && !expected.includes(before.version)) throw new StaleVersionError(id, before.version);
}

/** The entity's per-entity lock: concurrent writers of one entity take turns, so each compares with the version really before it. */
async function lockEntity(tx: Tx, id: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtextextended(${`entity ${id}`}, 0))`.execute(tx);
}

/**
 * Record the entity's new state as an EntityChangedEvent, unless nothing
 * changed. Concurrent writers of one entity are serialised so `changed` is
 * computed against the version really before it.
 */
export async function putEntity(
  db: Db,
  id: string,
  input: EntityInput,
  changedBy: string,
  expected?: ExpectedVersion,
): Promise<{ version: EntityVersion; created: boolean; changed: boolean }> {
  entityId.parse(id);
  const parsed = EntityInput.parse(input);
  return inTransaction(db, "entity_admin", async (tx) => {
    await lockEntity(tx, id);
    const before = await getEntity(tx, id);
    checkExpected(id, before, expected);
    return recordChange(tx, id, before, parsed, changedBy);
  });
}

/** Append the entity's new state unless it equals `before`: the version it makes, and what changed. */
async function recordChange(
  tx: Tx,
  id: string,
  before: EntityVersion | null,
  parsed: EntityInput,
  changedBy: string,
): Promise<{ version: EntityVersion; created: boolean; changed: boolean }> {
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
}

/** RFC 7396 JSON Merge Patch: objects merge key by key, null removes a key, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== "object" || Array.isArray(patch)) return patch;
  const result: Record<string, unknown> = target !== null && typeof target === "object" && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

/**
 * Change some fields of an existing entity (PATCH): the patch is merged into
 * the entity as it is (RFC 7396: `null` clears a field, `preferences` merges
 * key by key) and the result validated like a PUT, so a patch that leaves
 * the entity invalid is refused naming the field, and nothing is stored.
 */
export async function patchEntity(
  db: Db,
  id: string,
  patch: Record<string, unknown>,
  changedBy: string,
  expected?: ExpectedVersion,
): Promise<{ version: EntityVersion; changed: boolean }> {
  entityId.parse(id);
  return inTransaction(db, "entity_admin", async (tx) => {
    await lockEntity(tx, id);
    const before = await getEntity(tx, id);
    checkExpected(id, before, expected);
    if (!before) throw new NotFoundError(`no entity with id "${id}"`);
    const current: Record<string, unknown> = { ...before.entity };
    delete current.id;
    const merged = EntityInput.safeParse(mergePatch(current, patch));
    if (!merged.success) throw ValidationError.fromZod(merged.error, "body");
    const { version, changed } = await recordChange(tx, id, before, merged.data, changedBy);
    return { version, changed };
  });
}

export interface EntityFilter {
  kind?: string | undefined;
  /** An email address (any case) or a Slack destination, exactly. */
  address?: string | undefined;
  /** Part of the id, name or email, any case. */
  text?: string | undefined;
  /** The last id of the previous page. */
  afterId?: string | undefined;
  limit: number;
}

/**
 * Entities as they are now (removed ones left out), by id, a page after
 * `afterId`, filtered on their current version. One query: the newest record
 * of each entity (entity.events (id, position)), filtered, with its version.
 */
export async function listEntities(db: Executor, filter: EntityFilter): Promise<{ items: EntityVersion[]; nextAfterId: string | null }> {
  const table = streamTable(EntityStreams.events);
  const entity = sql`l.payload->'entity'`;
  const conditions = [sql`l.type = ${EntityRecordTypes.EntityChangedEvent}`];
  if (filter.kind !== undefined) conditions.push(sql`${entity}->>'kind' = ${filter.kind}`);
  if (filter.address !== undefined) conditions.push(sql`(lower(${entity}->>'email') = lower(${filter.address}) or ${entity}->>'slack' = ${filter.address})`);
  if (filter.text !== undefined) {
    const text = filter.text.toLowerCase();
    conditions.push(sql`(strpos(lower(l.id), ${text}) > 0 or strpos(lower(${entity}->>'name'), ${text}) > 0 or strpos(lower(coalesce(${entity}->>'email', '')), ${text}) > 0)`);
  }
  const { rows } = await sql<RecordRow & { version: number }>`
    select l.*, (select count(*)::int from ${table} c where c.id = l.id and c.position <= l.position) as version
    from (select distinct on (r.id) ${RECORD_COLUMNS_R} from ${table} r
          where r.id > ${filter.afterId ?? ""} order by r.id, r.position desc) l
    where ${sql.join(conditions, sql` and `)}
    order by l.id
    limit ${filter.limit + 1}`.execute(db);
  const items = rows.slice(0, filter.limit).flatMap((row) => {
    const version = toVersion(toRecord(EntityStreams.events, row), row.version);
    return version ? [version] : [];
  });
  return { items, nextAfterId: rows.length > filter.limit ? items[items.length - 1]!.entity.id : null };
}

export async function removeEntity(db: Db, id: string, removedBy: string): Promise<boolean> {
  return inTransaction(db, "entity_admin", async (tx) => {
    await lockEntity(tx, id);
    if (!(await getEntity(tx, id))) return false;
    await appendOne(tx, EntityStreams.events, {
      id,
      type: EntityRecordTypes.EntityRemovedEvent,
      payload: EntityRemovedEvent.parse({ entityId: id, removedBy }),
    });
    return true;
  });
}
