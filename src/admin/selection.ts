import { sql, type RawBuilder } from "kysely";
import type { Executor } from "../db/database";
import { NotFoundError, ValidationError } from "../errors/errors";
import { HANDLING_STATUSES, type HandlingStatus } from "../streams/interfaces";
import { handlingTable, streamTable } from "../streams/names";
import { recordsAboutEntity } from "../notification/streams";
import { AVAILABLE_STATUSES, isAvailable } from "../streams/transitions";

/**
 * Which (record, concern) pairs an operator's command is about. Everything
 * here reads the registry (`tidings.streams`, `tidings.stream_consumers`,
 * `tidings.stream_concern_states`) and the `<table>__handling` tables; the
 * caller runs it in a transaction acting as `operator`, so PostgreSQL checks
 * that the operator may read what is selected.
 */

/** Filters as a person types them: strings are parsed and checked here. */
export interface SelectionInput {
  stream?: string;
  concern?: string;
  /** Handling statuses, or "stuck" (Running, last changed longer ago than `olderThan`, default 10m). */
  status?: readonly string[];
  types?: readonly string[];
  /** Bounds on the time of the current handling change (a date, or a duration meaning "that long ago"). */
  since?: Date | string;
  until?: Date | string;
  /** Bounds on the time the record was written. */
  recordedSince?: Date | string;
  recordedUntil?: Date | string;
  /** Only pairs whose handling last changed longer ago than this ("10m", "2h", or milliseconds). */
  olderThan?: string | number;
  /** Case-insensitive substring of the handling's last error. */
  errorContains?: string;
  /** A record id: for a notification, its tracking id. */
  notification?: string;
  /** Records naming this entity (payload.entityId), or of a notification whose client operation names it. */
  entity?: string;
  limit?: number | string;
}

/** One consumer of a stream as the registry declares it, with its on/off switch. */
export interface ConsumerPair {
  stream: string;
  concern: string;
  recordTypes: string[] | null;
  disabled: boolean;
}

export interface Selection {
  pairs: ConsumerPair[];
  /** null: any status. */
  statuses: HandlingStatus[] | null;
  types: string[] | null;
  since: Date | null;
  until: Date | null;
  recordedSince: Date | null;
  recordedUntil: Date | null;
  olderThanMs: number | null;
  errorContains: string | null;
  notification: string | null;
  entity: string | null;
  limit: number;
}

/** One record as seen by one concern. */
export interface SelectedRecord {
  stream: string;
  position: number;
  id: string;
  type: string;
  concern: string;
  /** As `getHandling` reports it: no row is AvailableByDefault; a waiting record of a disabled stream is DisabledForStream. */
  status: HandlingStatus;
  attempts: number;
  claimedBy: string | null;
  lastAction: string | null;
  lastActor: string | null;
  lastReason: string | null;
  lastError: string | null;
  /** The current handling change (null: never handled). */
  updatedAt: Date | null;
  recordedAt: Date;
  /** Since the last handling change (or since the record was written, when never handled). */
  ageMs: number;
  streamDisabled: boolean;
}

export interface SelectionResult {
  records: SelectedRecord[];
  /** How many pairs match in all, before `limit`. */
  matched: number;
  limited: boolean;
}

export const DEFAULT_STUCK_AFTER = "10m";
const MAX_LIMIT = 100_000;
const RECORD_TYPE = /^[A-Za-z][A-Za-z0-9_.]*$/;
/** Statuses a handling row can hold (the other two are implied: no row, or a disabled stream). */
const ROW_STATUSES = HANDLING_STATUSES.filter((s) => s !== "AvailableByDefault" && s !== "DisabledForStream");

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };

/** "90s", "10m", "1h30m", "2d", "500ms" or a bare number of milliseconds. */
export function parseDuration(text: string | number, field = "duration"): number {
  if (typeof text === "number") {
    if (!Number.isFinite(text) || text < 0) throw new ValidationError(`${field} must be a duration of 0 or more`, [{ path: field, message: "must be 0 or more" }]);
    return text;
  }
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const parts = [...trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== trimmed) {
    throw new ValidationError(`${field} "${text}" is not a duration: use e.g. 90s, 10m, 2h, 1d or 1h30m`, [
      { path: field, message: `"${text}" is not a duration (e.g. 90s, 10m, 2h, 1d)` },
    ]);
  }
  return parts.reduce((sum, p) => sum + Number(p[1]) * UNITS[p[2]!]!, 0);
}

/** A date (ISO 8601) or a duration meaning "that long before now". */
export function parseTimeBound(value: Date | string, field: string, now = new Date()): Date {
  if (value instanceof Date) {
    if (Number.isNaN(value.getTime())) throw new ValidationError(`${field} is not a valid date`, [{ path: field, message: "invalid date" }]);
    return value;
  }
  const text = value.trim();
  if (/^\d+(\.\d+)?(ms|s|m|h|d|w)/.test(text)) {
    return new Date(now.getTime() - parseDuration(text, field));
  }
  const parsed = Date.parse(text);
  if (!/^\d{4}-\d{2}-\d{2}/.test(text) || Number.isNaN(parsed)) {
    throw new ValidationError(`${field} "${value}" is neither a date (2025-06-01T14:00Z) nor a duration ago (2h)`, [
      { path: field, message: `"${value}" is neither an ISO date nor a duration such as 2h` },
    ]);
  }
  return new Date(parsed);
}

async function loadConsumers(db: Executor): Promise<{ streams: string[]; consumers: ConsumerPair[] }> {
  const streams = await db.selectFrom("tidings.streams").select("name").orderBy("name").execute();
  const { rows } = await sql<{ stream: string; concern: string; record_types: string[] | null; disabled: boolean | null }>`
    select c.stream, c.concern, c.record_types, s.disabled
    from tidings.stream_consumers c
    left join tidings.stream_concern_states s on s.stream = c.stream and s.concern = c.concern
    order by c.stream, c.concern`.execute(db);
  return {
    streams: streams.map((s) => s.name),
    consumers: rows.map((r) => ({ stream: r.stream, concern: r.concern, recordTypes: r.record_types, disabled: r.disabled ?? false })),
  };
}

/** The consumers a stream/concern filter names, or an error naming what is unknown. */
export async function resolvePairs(db: Executor, stream: string | undefined, concern: string | undefined): Promise<ConsumerPair[]> {
  const { streams, consumers } = await loadConsumers(db);
  if (stream !== undefined && !streams.includes(stream)) {
    throw new NotFoundError(`unknown stream "${stream}": the streams are ${streams.join(", ")}`);
  }
  const concerns = [...new Set(consumers.map((c) => c.concern))].sort();
  if (concern !== undefined && !concerns.includes(concern)) {
    throw new NotFoundError(`unknown concern "${concern}": the concerns are ${concerns.join(", ")}`);
  }
  const pairs = consumers.filter((c) => (stream === undefined || c.stream === stream) && (concern === undefined || c.concern === concern));
  if (pairs.length === 0 && stream !== undefined) {
    const ofStream = consumers.filter((c) => c.stream === stream).map((c) => c.concern);
    if (ofStream.length === 0) throw new NotFoundError(`stream "${stream}" has no consumers: none of its records is handled`);
    const ofConcern = consumers.filter((c) => c.concern === concern).map((c) => c.stream);
    throw new NotFoundError(`concern "${concern}" does not consume stream "${stream}": ${stream} is handled by ${ofStream.join(", ")}; ${concern} handles ${ofConcern.join(", ")}`);
  }
  return pairs;
}

function optionalText(value: string | undefined, field: string, issues: { path: string; message: string }[], max = 500): string | null {
  if (value === undefined) return null;
  if (value.trim() === "" || value.length > max) {
    issues.push({ path: field, message: value.trim() === "" ? "must not be empty" : `must be at most ${max} characters` });
    return null;
  }
  return value;
}

function capture<T>(fn: () => T, issues: { path: string; message: string }[]): T | null {
  try {
    return fn();
  } catch (error) {
    if (error instanceof ValidationError) {
      issues.push(...(error.issues.length ? error.issues : [{ path: "selection", message: error.message }]));
      return null;
    }
    throw error;
  }
}

/**
 * Check every filter and resolve stream and concern against the registry.
 * `fixedStatuses` is the acting verbs' own status (Failed for redrive-failed, ...).
 * All problems are reported together, each naming its field.
 */
export async function resolveSelection(db: Executor, input: SelectionInput, options: { fixedStatuses?: HandlingStatus[]; defaultLimit: number; now?: Date }): Promise<Selection> {
  const issues: { path: string; message: string }[] = [];
  const now = options.now ?? new Date();

  let statuses: HandlingStatus[] | null = options.fixedStatuses ?? null;
  let olderThanMs = input.olderThan === undefined ? null : capture(() => parseDuration(input.olderThan!, "olderThan"), issues);
  if (input.status !== undefined && input.status.length > 0) {
    const wanted = new Set<HandlingStatus>();
    for (const raw of input.status) {
      const name = raw.trim();
      if (name.toLowerCase() === "stuck") {
        wanted.add("Running");
        olderThanMs ??= parseDuration(DEFAULT_STUCK_AFTER);
        continue;
      }
      const match = HANDLING_STATUSES.find((s) => s.toLowerCase() === name.toLowerCase());
      if (match) wanted.add(match);
      else issues.push({ path: "status", message: `unknown status "${raw}": use stuck or one of ${HANDLING_STATUSES.join(", ")}` });
    }
    const fixed = options.fixedStatuses;
    if (fixed) {
      // A verb acts on its own status only; --status may restate it (or ask for "stuck" Running records).
      const other = [...wanted].filter((s) => !fixed.includes(s));
      if (other.length > 0) issues.push({ path: "status", message: `this command acts on ${fixed.join(", ")} records only, not ${other.join(", ")}` });
    } else {
      statuses = [...wanted];
    }
  }

  const types = input.types && input.types.length > 0 ? [...input.types] : null;
  for (const t of types ?? []) {
    if (!RECORD_TYPE.test(t)) issues.push({ path: "type", message: `"${t}" is not a record type name (letters, digits, _ and .)` });
  }
  const bound = (v: Date | string | undefined, field: string) => (v === undefined ? null : capture(() => parseTimeBound(v, field, now), issues));
  const since = bound(input.since, "since");
  const until = bound(input.until, "until");
  const recordedSince = bound(input.recordedSince, "recordedSince");
  const recordedUntil = bound(input.recordedUntil, "recordedUntil");
  if (since && until && since > until) issues.push({ path: "until", message: "must not be before since" });
  if (recordedSince && recordedUntil && recordedSince > recordedUntil) {
    issues.push({ path: "recordedUntil", message: "must not be before recordedSince" });
  }

  let limit = options.defaultLimit;
  if (input.limit !== undefined) {
    const n = typeof input.limit === "number" ? input.limit : /^\d+$/.test(input.limit.trim()) ? Number(input.limit) : NaN;
    if (!Number.isSafeInteger(n) || n < 1 || n > MAX_LIMIT) issues.push({ path: "limit", message: `${JSON.stringify(input.limit)} is not a whole number from 1 to ${MAX_LIMIT}` });
    else limit = n;
  }

  const errorContains = optionalText(input.errorContains, "errorContains", issues);
  const notification = optionalText(input.notification, "notification", issues, 200);
  const entity = optionalText(input.entity, "entity", issues, 200);
  const stream = optionalText(input.stream, "stream", issues, 200) ?? undefined;
  const concern = optionalText(input.concern, "concern", issues, 200) ?? undefined;

  if (issues.length > 0) {
    throw ValidationError.fromIssues("selection", issues);
  }
  const pairs = await resolvePairs(db, stream, concern);
  return {
    pairs,
    statuses,
    types,
    since,
    until,
    recordedSince,
    recordedUntil,
    olderThanMs,
    errorContains,
    notification,
    entity,
    limit,
  };
}

interface SelectedRow {
  position: number;
  id: string;
  type: string;
  recorded_at: Date;
  status: HandlingStatus | null;
  attempts: number | null;
  claimed_by: string | null;
  last_action: string | null;
  last_actor: string | null;
  last_reason: string | null;
  last_error: string | null;
  updated_at: Date | null;
  age_ms: number;
  matched: number;
}

/**
 * Which stored statuses a status filter means for one pair. A waiting
 * record of a disabled stream reads as DisabledForStream (as getHandling
 * says), so on a disabled pair "DisabledForStream" means the Available*
 * statuses and the Available* statuses themselves match nothing.
 */
function storedStatuses(pair: ConsumerPair, wanted: HandlingStatus[] | null): { rows: HandlingStatus[] | "any"; withoutRow: boolean } {
  // Any status: records never handled are listed too (AvailableByDefault, or DisabledForStream).
  if (wanted === null) return { rows: "any", withoutRow: true };
  const rows = new Set<HandlingStatus>();
  let withoutRow = false;
  for (const status of wanted) {
    if (status === "DisabledForStream") {
      if (!pair.disabled) continue;
      for (const s of AVAILABLE_STATUSES) if (s !== "AvailableByDefault") rows.add(s);
      withoutRow = true;
    } else if (status === "AvailableByDefault") {
      if (!pair.disabled) withoutRow = true;
    } else if (isAvailable(status) && pair.disabled) {
      continue;
    } else if ((ROW_STATUSES as readonly string[]).includes(status)) {
      rows.add(status);
    }
  }
  return { rows: [...rows], withoutRow };
}

function pairQuery(pair: ConsumerPair, sel: Selection, limit: number): RawBuilder<SelectedRow> | null {
  const { rows: statuses, withoutRow } = storedStatuses(pair, sel.statuses);
  if (statuses !== "any" && statuses.length === 0 && !withoutRow) return null;

  // A record without a handling row is waiting only if the concern handles its type at all.
  const handledType = pair.recordTypes === null ? sql`true` : sql`s.type = any(${pair.recordTypes}::text[])`;
  const rowStatus = statuses === "any" ? sql`h.status is not null` : sql`h.status = any(${statuses}::tidings.handling_status[])`;
  const conditions: RawBuilder<unknown>[] = [withoutRow ? sql`(${rowStatus} or (h.status is null and ${handledType}))` : rowStatus];
  const changedAt = sql`coalesce(h.updated_at, s.recorded_at)`;

  if (sel.types) conditions.push(sql`s.type = any(${sel.types}::text[])`);
  if (sel.notification !== null) conditions.push(sql`s.id = ${sel.notification}`);
  if (sel.entity !== null) {
    conditions.push(recordsAboutEntity(pair.stream, sel.entity));
  }
  if (sel.errorContains !== null) conditions.push(sql`strpos(lower(h.last_error), lower(${sel.errorContains})) > 0`);
  if (sel.olderThanMs !== null) conditions.push(sql`${changedAt} < now() - ${sel.olderThanMs}::double precision * interval '1 millisecond'`);
  if (sel.since) conditions.push(sql`${changedAt} >= ${sel.since}`);
  if (sel.until) conditions.push(sql`${changedAt} <= ${sel.until}`);
  if (sel.recordedSince) conditions.push(sql`s.recorded_at >= ${sel.recordedSince}`);
  if (sel.recordedUntil) conditions.push(sql`s.recorded_at <= ${sel.recordedUntil}`);

  const join = withoutRow ? sql`left join` : sql`join`;
  return sql<SelectedRow>`
    select s.position, s.id, s.type, s.recorded_at,
           h.status::text as status, h.attempts, h.claimed_by, h.last_action, h.last_actor, h.last_reason, h.last_error, h.updated_at,
           (extract(epoch from now() - ${changedAt}) * 1000)::double precision as age_ms,
           count(*) over () as matched
    from ${streamTable(pair.stream)} s
    ${join} ${handlingTable(pair.stream)} h on h.position = s.position and h.concern = ${pair.concern}
    where ${sql.join(conditions, sql` and `)}
    order by s.position
    limit ${limit}`;
}

function toSelected(pair: ConsumerPair, row: SelectedRow): SelectedRecord {
  const stored: HandlingStatus = row.status ?? "AvailableByDefault";
  return {
    stream: pair.stream,
    position: row.position,
    id: row.id,
    type: row.type,
    concern: pair.concern,
    status: pair.disabled && isAvailable(stored) ? "DisabledForStream" : stored,
    attempts: row.attempts ?? 0,
    claimedBy: row.claimed_by,
    lastAction: row.last_action,
    lastActor: row.last_actor,
    lastReason: row.last_reason,
    lastError: row.last_error,
    updatedAt: row.updated_at,
    recordedAt: row.recorded_at,
    ageMs: Math.max(0, Math.round(row.age_ms)),
    streamDisabled: pair.disabled,
  };
}

/** The selected pairs, stream by stream (in name order), by position; `limit` over all of them. */
export async function selectRecords(db: Executor, sel: Selection): Promise<SelectionResult> {
  const records: SelectedRecord[] = [];
  let matched = 0;
  for (const pair of sel.pairs) {
    // Each stream is still counted once the limit is reached, so the total stays true.
    const query = pairQuery(pair, sel, Math.max(sel.limit - records.length, 1));
    if (!query) continue;
    const { rows } = await query.execute(db);
    matched += rows[0] ? Number(rows[0].matched) : 0;
    for (const row of rows) if (records.length < sel.limit) records.push(toSelected(pair, row));
  }
  return { records, matched, limited: matched > records.length };
}
