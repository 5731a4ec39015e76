import { sql } from "kysely";
import type { Executor } from "../db/database";
import { ConflictError, InvalidTransitionError, NotFoundError, PgCodes, ValidationError, pgCode } from "../errors/errors";
import type { HandlingHistoryEntry, HandlingState, HandlingStatus, StreamRecord } from "./interfaces";
import { RECORD_COLUMNS_R, toRecord, type RecordRow } from "./read";
import { assertStreamName, handlingTable, historyTable, streamTable } from "./names";
import { AVAILABLE_STATUSES, TRANSITIONS, isAvailable, requiresReason, type HandlingAction } from "./transitions";

/**
 * Handling state beside each stream: the current status of a record for a
 * concern (no row = AvailableByDefault) and, written by trigger, the history
 * of every change. Each change is one statement; the database's guard
 * trigger refuses anything `tidings.handling_transitions` does not allow.
 */

export interface HandlingRow {
  position: number;
  concern: string;
  status: HandlingStatus;
  attempts: number;
  claimed_by: string | null;
  last_action: string;
  last_actor: string;
  last_reason: string | null;
  last_details: unknown;
  last_error: string | null;
  updated_at: Date;
}

export function toState(stream: string, row: HandlingRow): HandlingState {
  return {
    stream,
    position: row.position,
    concern: row.concern,
    status: row.status,
    attempts: row.attempts,
    claimedBy: row.claimed_by,
    lastAction: row.last_action,
    lastActor: row.last_actor,
    lastReason: row.last_reason,
    lastError: row.last_error,
    lastDetails: row.last_details,
    updatedAt: row.updated_at,
    retryAt: retryAtOf(row),
  };
}

/** A failure or a self-cancellation that scheduled the next attempt (queueHandling with a delay) records the delay as `retryInMs`. */
function retryAtOf(row: HandlingRow): Date | null {
  if (row.status !== "AvailableAfterFailure" && row.status !== "AvailableAfterSelfCancellation") return null;
  const retryInMs = (row.last_details as { retryInMs?: unknown } | null)?.retryInMs;
  return typeof retryInMs === "number" ? new Date(row.updated_at.getTime() + retryInMs) : null;
}

export function defaultState(stream: string, position: number, concern: string): HandlingState {
  return {
    stream,
    position,
    concern,
    status: "AvailableByDefault",
    attempts: 0,
    claimedBy: null,
    lastAction: "none",
    lastActor: "none",
    lastReason: null,
    lastError: null,
    lastDetails: null,
    updatedAt: null,
    retryAt: null,
  };
}

export interface ChangeBy {
  /** Who makes the change: a bot, a job, an operator's name. */
  actor: string;
  /** Why; required for every change but `complete`. */
  reason?: string;
  details?: Record<string, unknown>;
}

/** What a claim writes: Running (claim), or Completed at once (handle: a transactional batch's claim and completion in one step). */
function claimKind(handle: boolean | undefined) {
  return handle ? ({ status: "Completed", action: "handle", verb: "handled" } as const) : ({ status: "Running", action: "claim", verb: "claimed" } as const);
}

const STATUS_ARRAY = (statuses: readonly HandlingStatus[]) => sql`${[...statuses]}::tidings.handling_status[]`;

/** A claim (or a handling at once) of a record that already has a handling row: only from an Available* status, one more attempt. */
const RECLAIM_IF_AVAILABLE = sql`
  on conflict (position, concern) do update set
    status = excluded.status,
    attempts = h.attempts + 1,
    claimed_by = excluded.claimed_by,
    last_action = excluded.last_action,
    last_actor = excluded.last_actor,
    last_reason = excluded.last_reason,
    last_details = excluded.last_details
  where h.status = any(${STATUS_ARRAY(AVAILABLE_STATUSES)})`;

async function isStreamDisabled(db: Executor, stream: string, concern: string): Promise<boolean> {
  const row = await db.selectFrom("tidings.stream_concern_states").select("disabled").where("stream", "=", stream).where("concern", "=", concern).executeTakeFirst();
  return row?.disabled ?? false;
}

async function assertConsumer(db: Executor, stream: string, concern: string): Promise<void> {
  const row = await db.selectFrom("tidings.stream_consumers").select("concern").where("stream", "=", stream).where("concern", "=", concern).executeTakeFirst();
  if (!row) throw new NotFoundError(`concern "${concern}" does not consume stream "${stream}"`);
}

async function assertRecordExists(db: Executor, stream: string, position: number): Promise<void> {
  const { rows } = await sql`select 1 from ${streamTable(stream)} where position = ${position}`.execute(db);
  if (rows.length === 0) throw new NotFoundError(`stream ${stream} has no record at position ${position}`);
}

/** Current handling state; DisabledForStream when the stream is off for this concern and the record is waiting. */
export async function getHandling(db: Executor, stream: string, position: number, concern: string): Promise<HandlingState> {
  const { rows } = await sql<HandlingRow>`
    select * from ${handlingTable(stream)} where position = ${position} and concern = ${concern}`.execute(db);
  const state = rows[0] ? toState(stream, rows[0]) : defaultState(stream, position, concern);
  if (isAvailable(state.status) && (await isStreamDisabled(db, stream, concern))) {
    return { ...state, status: "DisabledForStream" };
  }
  return state;
}

export async function getHistory(db: Executor, stream: string, position: number, concern?: string): Promise<HandlingHistoryEntry[]> {
  const { rows } = await sql<HistoryRow>`
    select * from ${historyTable(stream)}
    where position = ${position} ${concern === undefined ? sql`` : sql`and concern = ${concern}`}
    order by entry`.execute(db);
  return rows.map((r) => toHistoryEntry(stream, r));
}

export interface HistoryRow {
  entry: number;
  position: number;
  concern: string;
  from_status: HandlingStatus;
  to_status: HandlingStatus;
  action: string;
  actor: string;
  reason: string | null;
  details: unknown;
  attempt: number;
  recorded_at: Date;
  recorded_by: string;
}

/** History row type → domain type, in one place. */
export function toHistoryEntry(stream: string, r: HistoryRow): HandlingHistoryEntry {
  return {
    entry: r.entry,
    stream,
    position: r.position,
    concern: r.concern,
    fromStatus: r.from_status,
    toStatus: r.to_status,
    action: r.action,
    actor: r.actor,
    reason: r.reason,
    details: r.details,
    attempt: r.attempt,
    recordedAt: r.recorded_at,
    recordedBy: r.recorded_by,
  };
}

export type ClaimResult = { claimed: true; state: HandlingState } | { claimed: false; state: HandlingState; why: string };

/**
 * Claim a record for a concern: any Available* → Running, atomically. Of many
 * concurrent claimers exactly one wins: INSERT .. ON CONFLICT DO UPDATE ..
 * WHERE status is available makes the others wait on the winner's row and
 * then find it Running. Nothing is claimed while the stream is disabled for
 * the concern.
 */
export async function claim(
  db: Executor,
  target: { stream: string; position: number; concern: string },
  by: ChangeBy & { claimedBy?: string; /** Claim and complete at once (see claimManyWithRecords). */ handle?: boolean },
): Promise<ClaimResult> {
  const { stream, position, concern } = target;
  assertStreamName(stream);
  const { status, action, verb } = claimKind(by.handle);
  const reason = by.reason ?? `${verb} by ${by.claimedBy ?? by.actor}`;
  const { rows } = await sql<HandlingRow>`
      insert into ${handlingTable(stream)} as h
        (position, concern, status, attempts, claimed_by, last_action, last_actor, last_reason, last_details)
      select ${position}, ${concern}, ${status}::tidings.handling_status, 1, ${by.handle ? null : (by.claimedBy ?? null)}, ${action}, ${by.actor}, ${reason},
             ${by.details ? JSON.stringify(by.details) : null}::jsonb
      where exists (select 1 from ${streamTable(stream)} r where r.position = ${position})
        and not exists (
        select 1 from tidings.stream_concern_states s
        where s.stream = ${stream} and s.concern = ${concern} and s.disabled)
      ${RECLAIM_IF_AVAILABLE}
      returning *`.execute(db);
  if (rows[0]) return { claimed: true, state: toState(stream, rows[0]) };
  const state = await getHandling(db, stream, position, concern);
  if (state.updatedAt === null) await assertRecordExists(db, stream, position);
  const why =
    state.status === "Running"
      ? `record ${position} of ${stream} is already being handled for ${concern} (by ${state.claimedBy ?? state.lastActor})`
      : state.status === "DisabledForStream"
        ? `stream ${stream} is disabled for ${concern}`
        : `record ${position} of ${stream} is ${state.status} for ${concern}`;
  return { claimed: false, state, why };
}

/**
 * Apply a handling action other than claim (complete, fail, self_cancel,
 * cancel, reset_failed, archive_failure, reset_completed). A change the state
 * machine forbids is refused with the current and requested status.
 */
export async function transition(
  db: Executor,
  target: { stream: string; position: number; concern: string },
  action: Exclude<HandlingAction, "claim" | "handle" | "disable_for_record">,
  by: ChangeBy & {
    error?: string;
    /**
     * The attempt this change is about (a bot recording how its attempt
     * ended): refused if the record has been claimed again since, so a
     * worker cut off past its lease cannot write over the attempt of the
     * worker that took its record over.
     */
    attempt?: number;
  },
): Promise<HandlingState> {
  const { stream, position, concern } = target;
  assertStreamName(stream);
  const rule = TRANSITIONS[action];
  if (!rule) throw new ValidationError(`unknown handling action "${action}"`);
  if (requiresReason(action) && !by.reason?.trim()) {
    throw new ValidationError(`a reason is required to ${action} record ${position} of ${stream} for ${concern}`);
  }
  const { rows } = await sql<HandlingRow>`
    update ${handlingTable(stream)} set
      status = ${rule.to},
      claimed_by = ${rule.to === "Running" ? sql`claimed_by` : sql`null`},
      last_action = ${action},
      last_actor = ${by.actor},
      last_reason = ${by.reason ?? null},
      last_details = ${by.details ? JSON.stringify(by.details) : null}::jsonb,
      last_error = ${by.error === undefined ? sql`last_error` : sql`${by.error}`}
    where position = ${position} and concern = ${concern} and status = any(${STATUS_ARRAY(rule.from)})
      ${by.attempt === undefined ? sql`` : sql`and attempts = ${by.attempt}`}
    returning *`
    .execute(db)
    .catch((error: unknown) => {
      // An erased notification's record is never made available again (migrations/0004_erasure.sql).
      throw pgCode(error) === PgCodes.erased ? new ConflictError((error as Error).message, { cause: error }) : error;
    });
  if (rows[0]) return toState(stream, rows[0]);
  const current = await getHandling(db, stream, position, concern);
  if (by.attempt !== undefined && current.attempts !== by.attempt && rule.from.includes(current.status)) {
    throw new InvalidTransitionError(
      action,
      current.status,
      rule.to,
      `record ${position} of ${stream} for ${concern}: attempt ${by.attempt} was taken over by attempt ${current.attempts}`,
    );
  }
  throw new InvalidTransitionError(action, current.status, rule.to, `record ${position} of ${stream} for ${concern}`);
}

/** Disable a record for every concern that consumes its stream. Not undone. */
export async function disableRecord(db: Executor, stream: string, position: number, by: ChangeBy): Promise<HandlingState[]> {
  assertStreamName(stream);
  if (!by.reason?.trim()) throw new ValidationError(`a reason is required to disable record ${position} of ${stream}`);
  await assertRecordExists(db, stream, position);
  const { rows } = await sql<HandlingRow>`
    insert into ${handlingTable(stream)} as h
      (position, concern, status, last_action, last_actor, last_reason, last_details)
    select ${position}, c.concern, 'DisabledForRecord', 'disable_for_record', ${by.actor}, ${by.reason},
           ${by.details ? JSON.stringify(by.details) : null}::jsonb
    from tidings.stream_consumers c where c.stream = ${stream}
    on conflict (position, concern) do update set
      status = 'DisabledForRecord', claimed_by = null, last_action = 'disable_for_record',
      last_actor = excluded.last_actor, last_reason = excluded.last_reason, last_details = excluded.last_details
    where h.status <> 'DisabledForRecord'
    returning *`.execute(db);
  return rows.map((r) => toState(stream, r));
}

/** Stop (disabled = true) or resume claiming a stream's records for one concern. Running work may finish. */
export async function setStreamDisabled(db: Executor, stream: string, concern: string, disabled: boolean, by: ChangeBy): Promise<{ changed: boolean; requeued: number }> {
  assertStreamName(stream);
  if (!by.reason?.trim()) {
    throw new ValidationError(`a reason is required to ${disabled ? "disable" : "enable"} ${stream} for ${concern}`);
  }
  await assertConsumer(db, stream, concern);
  const { rows } = await sql<{ disabled: boolean }>`
    insert into tidings.stream_concern_states (stream, concern, disabled, changed_by, reason)
    values (${stream}, ${concern}, ${disabled}, ${by.actor}, ${by.reason})
    on conflict (stream, concern) do update set
      disabled = excluded.disabled, changed_at = now(), changed_by = excluded.changed_by, reason = excluded.reason
    where tidings.stream_concern_states.disabled <> excluded.disabled
    returning disabled`.execute(db);
  // The history row is the database's (trigger history on tidings.stream_concern_states).
  const changed = rows.length > 0;
  if (!changed || disabled) return { changed, requeued: 0 };
  // Jobs that ran while the stream was off found nothing to claim and ended;
  // queue the records still waiting so enabling resumes them.
  const { rows: waiting } = await sql<{ position: number }>`
    select s.position from ${streamTable(stream)} s
    join tidings.stream_consumers c on c.stream = ${stream} and c.concern = ${concern}
    left join ${handlingTable(stream)} h on h.position = s.position and h.concern = ${concern}
    where (c.record_types is null or s.type = any(c.record_types))
      and (h.status is null or h.status = any(${STATUS_ARRAY(AVAILABLE_STATUSES)}))
    order by s.position`.execute(db);
  const requeued = await queueHandling(
    db,
    stream,
    concern,
    waiting.map((w) => w.position),
  );
  return { changed, requeued };
}

/**
 * Queue the handling job of these records for a concern (again), optionally
 * after a delay. The time it runs is the database's (now() plus the delay),
 * like every job's: a process whose clock is off cannot make a retry run
 * early or late.
 */
export async function queueHandling(db: Executor, stream: string, concern: string, positions: readonly number[], afterMs?: number): Promise<number> {
  if (positions.length === 0) return 0;
  const runAt = afterMs === undefined ? sql`null::timestamptz` : sql`now() + ${Math.max(0, Math.round(afterMs))} * interval '1 millisecond'`;
  const { rows } = await sql<{ n: number }>`
    select tidings.queue_handling(${stream}, ${concern}, ${[...positions]}::bigint[], ${runAt}) as n`.execute(db);
  return rows[0]?.n ?? 0;
}

/**
 * Work with nothing left to do (a notification's saga deadline once its
 * outcome is written): every record of these ids still waiting for the
 * concern (of the types it handles) is marked handled in one step (action
 * `handle`, with the reason; no attempt counted)
 * and its queued job leaves the queue (tidings.unqueue_handling, migrations/0016),
 * in one statement. A record whose job a worker holds right now is left to
 * that job, which finds the work done: that job may be waiting on this
 * transaction's locks, so writing its row here would wait on it in turn.
 * Returns the positions marked handled.
 */
export async function handleWithoutJobs(
  db: Executor,
  target: { stream: string; concern: string },
  ids: readonly string[],
  by: Required<Pick<ChangeBy, "actor" | "reason">>,
): Promise<number[]> {
  const { stream, concern } = target;
  assertStreamName(stream);
  if (ids.length === 0) return [];
  const { rows } = await sql<{ position: number }>`
    with waiting as (
      select r.position from ${streamTable(stream)} r
      join tidings.stream_consumers c on c.stream = ${stream} and c.concern = ${concern}
      left join ${handlingTable(stream)} h on h.position = r.position and h.concern = ${concern}
      where r.id = any(${[...ids]}::text[]) and (c.record_types is null or r.type = any(c.record_types))
        and (h.status is null or h.status = any(${STATUS_ARRAY(AVAILABLE_STATUSES)}))
    ), held as (
      select unnest(tidings.unqueue_handling(${stream}, ${concern}, (select array_agg(w.position) from waiting w))) as position
    )
    insert into ${handlingTable(stream)} as h (position, concern, status, attempts, claimed_by, last_action, last_actor, last_reason)
    select w.position, ${concern}, 'Completed', 1, null, 'handle', ${by.actor}, ${by.reason}
    from waiting w
    where w.position not in (select held.position from held)
      and not exists (select 1 from tidings.stream_concern_states s where s.stream = ${stream} and s.concern = ${concern} and s.disabled)
    -- From an Available status (a deadline job that waited, self-cancelled): no attempt is added, none was made.
    on conflict (position, concern) do update set
      status = excluded.status, claimed_by = null, last_action = excluded.last_action, last_actor = excluded.last_actor,
      last_reason = excluded.last_reason, last_details = null
    where h.status = any(${STATUS_ARRAY(AVAILABLE_STATUSES)})
    returning h.position`.execute(db);
  return rows.map((r) => Number(r.position));
}

/** How many times `action` was applied to this record for this concern (e.g. failed attempts). */
export async function countActions(db: Executor, target: { stream: string; position: number; concern: string }, action: HandlingAction): Promise<number> {
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from ${historyTable(target.stream)}
    where position = ${target.position} and concern = ${target.concern} and action = ${action}`.execute(db);
  return rows[0]?.n ?? 0;
}

/**
 * Claim many records of one stream for one concern, and read them, in one
 * statement (the batch runners' first). In position order; a record not
 * returned is held by someone else, finished, disabled, or gone.
 *
 * `handle`: claim and complete at once (action `handle`, straight to
 * Completed), for a transactional batch whose handler never leaves a record
 * in any other state: the row still holds others off until the transaction
 * ends, and if the handler fails, the transaction rolls back with it.
 */
export async function claimManyWithRecords(
  db: Executor,
  target: { stream: string; concern: string },
  items: ReadonlyArray<{ position: number; claimedBy: string }>,
  actor: string,
  options: { handle?: boolean } = {},
): Promise<Array<{ state: HandlingState; record: StreamRecord }>> {
  const { stream, concern } = target;
  assertStreamName(stream);
  if (items.length === 0) return [];
  const { status, action, verb } = claimKind(options.handle);
  const { rows } = await sql<RecordRow & { claimed: HandlingRow }>`
    with claimed as (
      insert into ${handlingTable(stream)} as h
        (position, concern, status, attempts, claimed_by, last_action, last_actor, last_reason)
      select p.position, ${concern}, ${status}::tidings.handling_status, 1, case when ${options.handle ?? false} then null else p.claimed_by end,
             ${action}, ${actor}, ${`${verb} by `} || p.claimed_by
      from unnest(${items.map((i) => i.position)}::bigint[], ${items.map((i) => i.claimedBy)}::text[]) as p(position, claimed_by)
      where exists (select 1 from ${streamTable(stream)} r where r.position = p.position)
        and not exists (
          select 1 from tidings.stream_concern_states s
          where s.stream = ${stream} and s.concern = ${concern} and s.disabled)
      ${RECLAIM_IF_AVAILABLE}
      returning *)
    select ${RECORD_COLUMNS_R}, to_jsonb(c) as claimed
    from claimed c join ${streamTable(stream)} r on r.position = c.position
    order by r.position`.execute(db);
  return rows.map((row) => ({
    state: toState(stream, { ...row.claimed, updated_at: new Date(row.claimed.updated_at as unknown as string) }),
    record: toRecord(stream, row),
  }));
}

/**
 * Running → Completed for many records of one concern in one statement, each
 * for the attempt that claimed it: a record claimed again since (its worker
 * was cut off past the lease and another took it over) is refused, so the
 * attempt of the worker that took over is not written over.
 */
export async function completeMany(
  db: Executor,
  target: { stream: string; concern: string },
  claims: ReadonlyArray<{ position: number; attempt: number }>,
  actor: string,
): Promise<{ completed: number; at: Date | null }> {
  assertStreamName(target.stream);
  if (claims.length === 0) return { completed: 0, at: null };
  const { rows } = await sql<{ position: number; updated_at: Date }>`
    update ${handlingTable(target.stream)} h set
      status = 'Completed', claimed_by = null, last_action = 'complete', last_actor = ${actor},
      last_reason = null, last_details = null
    from unnest(${claims.map((c) => c.position)}::bigint[], ${claims.map((c) => c.attempt)}::integer[]) as c(position, attempt)
    where h.concern = ${target.concern} and h.position = c.position and h.attempts = c.attempt and h.status = 'Running'
    returning h.position, h.updated_at`.execute(db);
  if (rows.length !== claims.length) {
    throw new InvalidTransitionError(
      "complete",
      "not Running for the attempt that claimed it",
      "Completed",
      `${claims.length - rows.length} records of ${target.stream} for ${target.concern}`,
    );
  }
  // updated_at is stamped with the transaction's start: the caller's "now" without asking for it.
  return { completed: rows.length, at: rows[0]?.updated_at ?? null };
}

export interface SweepResult {
  stream: string;
  concern: string;
  /** Records looked at after the sweep's cursor. */
  examined: number;
  /** Of those, records waiting with no job in the queue: queued now. */
  queued: number;
}

/**
 * Queue the records that wait for a concern with no job in the queue (see
 * tidings.sweep_handling): the outbox's safety net. One sweeper at a time;
 * a call while another sweeps returns nothing.
 */
export async function sweepHandling(db: Executor, limit = 1000): Promise<SweepResult[]> {
  const { rows } = await sql<SweepResult>`select * from tidings.sweep_handling(${limit})`.execute(db);
  return rows;
}
