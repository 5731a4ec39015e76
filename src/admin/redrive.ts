import os from "node:os";
import { sql } from "kysely";
import { inTransaction, type Db, type Tx } from "../db/database";
import { ValidationError, coerceError } from "../errors/errors";
import { getHandling, getHistory, queueHandling, setStreamDisabled, transition } from "../streams/handling";
import type { HandlingStatus } from "../streams/interfaces";
import { AVAILABLE_STATUSES, type HandlingAction } from "../streams/transitions";
import {
  DEFAULT_STUCK_AFTER,
  parseDuration,
  resolveSelection,
  selectRecords,
  type SelectedRecord,
  type Selection,
  type SelectionInput,
  type SelectionResult,
} from "./selection";

export * from "./selection";

/**
 * Operators' repairs of handling state: re-drive failed (or, deliberately,
 * completed) records, cancel records stuck Running, archive failures, and
 * switch a stream off and on for a concern. Every change goes through the
 * same engine functions the bots use (`transition`, `queueHandling`,
 * `setStreamDisabled`) in transactions acting as the `operator` role, so
 * the database's guard and history triggers see an operator's change exactly
 * as they see a bot's. A dry run is the default; acting needs `execute` and
 * a reason, and lands in the handling history with the actor, the reason and
 * the attempt it repeats.
 */

export const OPERATOR = "operator";

export type ActionVerb = "redrive-failed" | "redrive-completed" | "cancel-running" | "archive-failed";

interface VerbRule {
  from: HandlingStatus;
  action: Exclude<HandlingAction, "claim" | "disable_for_record">;
  to: HandlingStatus;
  /** Whether the handling job is queued again after the change. */
  queue: "always" | "never" | "when asked";
}

const VERBS: Record<ActionVerb, VerbRule> = {
  "redrive-failed": { from: "Failed", action: "reset_failed", to: "AvailableAfterFailure", queue: "always" },
  "redrive-completed": { from: "Completed", action: "reset_completed", to: "AvailableAfterCompletion", queue: "always" },
  "cancel-running": { from: "Running", action: "cancel", to: "AvailableAfterExternalCancellation", queue: "when asked" },
  "archive-failed": { from: "Failed", action: "archive_failure", to: "ArchivedAfterFailure", queue: "never" },
};

export const ACTION_VERBS = Object.keys(VERBS) as ActionVerb[];

export interface ActOptions {
  /** Act; without it nothing changes and the report says what would. */
  execute?: boolean;
  /** Why; required to execute. Lands in the handling history. */
  reason?: string;
  /** Who; defaults to the OS user. */
  actor?: string;
  /** cancel-running: queue the handling job again after cancelling. */
  requeue?: boolean;
  /** redrive-completed: the explicit "I know it was completed" confirmation. */
  confirmCompleted?: boolean;
  /** Records per transaction (default 100). */
  batchSize?: number;
  /** Called after each batch; awaited, so a caller may pause between batches. */
  onProgress?: (progress: Progress) => void | Promise<void>;
}

export interface Progress {
  done: number;
  total: number;
  changed: number;
  failed: number;
}

export interface PlannedChange extends SelectedRecord {
  to: HandlingStatus;
  /** Whether the handling job is (or would be) queued again. */
  requeue: boolean;
  outcome: "would change" | "changed" | "failed";
  error: string | null;
  /** What was written as the change's details (lineage), when it was made. */
  details: Record<string, unknown> | null;
}

export interface ActionReport {
  verb: ActionVerb;
  dryRun: boolean;
  actor: string;
  reason: string | null;
  /** Pairs matching the selection in all; `selected` of them were taken (see `limited`). */
  matched: number;
  selected: number;
  limited: boolean;
  changed: number;
  failed: number;
  queued: number;
  changes: PlannedChange[];
  warnings: string[];
}

/** The person acting: --actor, else the OS user. */
export function defaultActor(): string {
  const fromEnv = process.env.USER ?? process.env.LOGNAME ?? process.env.USERNAME;
  if (fromEnv?.trim()) return fromEnv.trim();
  try {
    return os.userInfo().username;
  } catch {
    return "unknown-operator";
  }
}

function resolveActor(actor: string | undefined): string {
  const name = (actor ?? defaultActor()).trim();
  if (name === "" || name.length > 200) {
    throw new ValidationError("actor must be 1 to 200 characters", [{ path: "actor", message: "must be 1 to 200 characters" }]);
  }
  return name;
}

/** Refuse to act without a reason; refuse to re-drive completed work without its confirmation. */
function checkMayAct(verb: ActionVerb, options: ActOptions): void {
  const reason = options.reason?.trim() ?? "";
  if (options.execute && reason === "") {
    throw new ValidationError(
      `refusing to ${verb} without a reason: --execute needs --reason "<why>", which is kept in the handling history`,
      [{ path: "reason", message: "required with --execute" }],
    );
  }
  if (options.reason !== undefined && options.reason.length > 2000) {
    throw new ValidationError("reason must be at most 2000 characters", [{ path: "reason", message: "at most 2000 characters" }]);
  }
  if (verb === "redrive-completed" && options.execute && !options.confirmCompleted) {
    throw new ValidationError(
      "refusing to re-drive completed records: their work was done (an email sent, a message posted) and will be done again; " +
        "add --i-know-it-was-completed to confirm",
      [{ path: "confirmCompleted", message: "required to execute redrive-completed" }],
    );
  }
  if (options.requeue && verb !== "cancel-running") {
    throw new ValidationError(`requeue applies to cancel-running only (${verb} ${VERBS[verb].queue === "always" ? "always queues" : "never queues"})`, [
      { path: "requeue", message: "cancel-running only" },
    ]);
  }
  const size = options.batchSize ?? 100;
  if (!Number.isSafeInteger(size) || size < 1 || size > 10_000) {
    throw new ValidationError("batch size must be a whole number from 1 to 10000", [{ path: "batchSize", message: "1 to 10000" }]);
  }
}

/** Reads run in a read-only transaction as the operator: a dry run cannot change anything. */
async function readAsOperator<T>(db: Db, fn: (tx: Tx) => Promise<T>): Promise<T> {
  return inTransaction(db, OPERATOR, async (tx) => {
    await sql`set transaction read only`.execute(tx);
    return fn(tx);
  });
}

/**
 * The history entry this change refers to: the failure a re-drive repeats,
 * the completion a re-drive of completed work repeats, the claim a
 * cancellation abandons.
 */
async function lineage(tx: Tx, verb: ActionVerb, record: PlannedChange): Promise<Record<string, unknown>> {
  const rule = VERBS[verb];
  const history = await getHistory(tx, record.stream, record.position, record.concern);
  const entry = [...history].reverse().find((h) => h.toStatus === rule.from);
  // The error as it is now, in this transaction: the record may have failed again since it was selected.
  const lastError = rule.from === "Failed" ? (await getHandling(tx, record.stream, record.position, record.concern)).lastError : record.lastError;
  const ref = entry
    ? { attempt: entry.attempt, historyEntry: entry.entry, at: entry.recordedAt.toISOString(), by: entry.actor }
    : { attempt: record.attempts, historyEntry: null, at: null, by: null };
  const base = { tool: "redrive", verb };
  switch (verb) {
    case "redrive-failed":
      return { ...base, redriveOf: { ...ref, lastError } };
    case "redrive-completed":
      return { ...base, redriveOf: { ...ref, completed: true } };
    case "cancel-running":
      return { ...base, cancelled: { ...ref, claimedBy: record.claimedBy, runningForMs: record.ageMs }, requeue: record.requeue };
    case "archive-failed":
      return { ...base, archived: { ...ref, lastError } };
  }
}

function plan(verb: ActionVerb, record: SelectedRecord, requeue: boolean): PlannedChange {
  return { ...record, to: VERBS[verb].to, requeue, outcome: "would change", error: null, details: null };
}

/**
 * Select records for `verb` and, with `execute`, change them in batches:
 * one transaction per batch, one savepoint per record, so a record someone
 * else changed meanwhile (InvalidTransitionError) is reported and the rest
 * go on.
 */
export async function runAction(db: Db, verb: ActionVerb, input: SelectionInput, options: ActOptions = {}): Promise<ActionReport> {
  const rule = VERBS[verb];
  if (!rule) throw new ValidationError(`unknown verb "${verb}": use ${ACTION_VERBS.join(", ")}`);
  checkMayAct(verb, options);
  const actor = resolveActor(options.actor);
  const reason = options.reason?.trim() || null;
  const requeue = rule.queue === "always" || (rule.queue === "when asked" && options.requeue === true);

  const selected = await readAsOperator(db, async (tx) => {
    const selection = await resolveSelection(tx, input, { fixedStatuses: [rule.from], defaultLimit: 1000 });
    return selectRecords(tx, selection);
  });
  const changes = selected.records.map((r) => plan(verb, r, requeue));
  const warnings: string[] = [];
  if (selected.limited) warnings.push(`${selected.matched} records match; only the first ${selected.records.length} are taken (raise --limit)`);
  if (verb === "redrive-completed" && !options.confirmCompleted) {
    warnings.push("executing redrive-completed also needs --i-know-it-was-completed: the work will be done again");
  }
  const disabled = [...new Set(changes.filter((c) => c.streamDisabled && c.requeue).map((c) => `${c.stream} (${c.concern})`))];
  if (disabled.length > 0) warnings.push(`disabled for their concern, so queued records wait until enable-stream: ${disabled.join(", ")}`);

  const report: ActionReport = {
    verb,
    dryRun: !options.execute,
    actor,
    reason,
    matched: selected.matched,
    selected: selected.records.length,
    limited: selected.limited,
    changed: 0,
    failed: 0,
    queued: 0,
    changes,
    warnings,
  };
  if (!options.execute) return report;

  const batchSize = options.batchSize ?? 100;
  for (let start = 0; start < changes.length; start += batchSize) {
    const batch = changes.slice(start, start + batchSize);
    try {
      await inTransaction(db, OPERATOR, async (tx) => {
        const toQueue = new Map<string, { stream: string; concern: string; changes: PlannedChange[] }>();
        for (const change of batch) {
          await sql`savepoint redrive_record`.execute(tx);
          try {
            const details = await lineage(tx, verb, change);
            await transition(tx, { stream: change.stream, position: change.position, concern: change.concern }, rule.action, {
              actor,
              reason: reason!,
              details,
            });
            await sql`release savepoint redrive_record`.execute(tx);
            change.outcome = "changed";
            change.details = details;
            if (change.requeue) {
              const key = `${change.stream} ${change.concern}`;
              const group = toQueue.get(key) ?? { stream: change.stream, concern: change.concern, changes: [] };
              group.changes.push(change);
              toQueue.set(key, group);
            }
          } catch (thrown) {
            await sql`rollback to savepoint redrive_record`.execute(tx);
            change.outcome = "failed";
            change.error = coerceError(thrown).message;
          }
        }
        for (const group of toQueue.values()) {
          await queueHandling(tx, group.stream, group.concern, group.changes.map((c) => c.position));
        }
      });
    } catch (thrown) {
      // The batch's transaction rolled back: none of its changes stuck.
      const message = coerceError(thrown).message;
      for (const change of batch) {
        if (change.outcome === "changed") {
          change.outcome = "failed";
          change.details = null;
          change.error = `batch rolled back: ${message}`;
        }
      }
    }
    report.changed = changes.filter((c) => c.outcome === "changed").length;
    report.failed = changes.filter((c) => c.outcome === "failed").length;
    await options.onProgress?.({ done: Math.min(start + batchSize, changes.length), total: changes.length, changed: report.changed, failed: report.failed });
  }
  report.queued = changes.filter((c) => c.outcome === "changed" && c.requeue).length;
  return report;
}

// --- Read-only verbs ---------------------------------------------------------

/** `list`: the selected (record, concern) pairs with their handling state, changing nothing. */
export async function listRecords(db: Db, input: SelectionInput): Promise<SelectionResult> {
  return readAsOperator(db, async (tx) => selectRecords(tx, await resolveSelection(tx, input, { defaultLimit: 200 })));
}

export interface StuckReport {
  olderThanMs: number;
  /** Running for longer than `olderThanMs`: a worker may have died holding them (see cancel-running). */
  running: SelectionResult;
  /** Failed with no retry to come: waiting for an operator (redrive-failed or archive-failed). */
  failed: SelectionResult;
}

/** `stuck`: what waits for an operator. `olderThan` applies to Running records only. */
export async function findStuck(db: Db, input: SelectionInput): Promise<StuckReport> {
  const olderThanMs = parseDuration(input.olderThan ?? DEFAULT_STUCK_AFTER, "olderThan");
  return readAsOperator(db, async (tx) => {
    const running = await resolveSelection(tx, { ...input, olderThan: olderThanMs }, { fixedStatuses: ["Running"], defaultLimit: 200 });
    const failed = await resolveSelection(tx, { ...input, olderThan: undefined }, { fixedStatuses: ["Failed"], defaultLimit: 200 });
    return { olderThanMs, running: await selectRecords(tx, running), failed: await selectRecords(tx, failed) };
  });
}

// --- Switching a stream off and on for a concern ------------------------------

export interface StreamSwitch {
  stream: string;
  concern: string;
  wasDisabled: boolean;
  disabled: boolean;
  /** Whether the switch changes (or would change) anything. */
  changes: boolean;
  /** Records waiting to be handled by this concern. */
  waiting: number;
  /** Jobs queued again by enabling (0 in a dry run). */
  requeued: number;
}

export interface SwitchReport {
  verb: "disable-stream" | "enable-stream";
  dryRun: boolean;
  actor: string;
  reason: string | null;
  switches: StreamSwitch[];
}

async function countWaiting(tx: Tx, sel: Selection): Promise<number> {
  const statuses: HandlingStatus[] = [...AVAILABLE_STATUSES, "DisabledForStream"];
  return (await selectRecords(tx, { ...sel, statuses, limit: 1 })).matched;
}

/**
 * `disable-stream` / `enable-stream`: stop (or resume) claiming a stream's
 * records for a concern. Without a stream, every stream the concern
 * consumes. Enabling queues the records still waiting (setStreamDisabled).
 */
export async function switchStream(
  db: Db,
  disabled: boolean,
  target: { concern?: string; stream?: string },
  options: Pick<ActOptions, "execute" | "reason" | "actor"> = {},
): Promise<SwitchReport> {
  const verb = disabled ? "disable-stream" : "enable-stream";
  if (!target.concern?.trim()) {
    throw new ValidationError(`${verb} needs the concern to switch (--concern)`, [{ path: "concern", message: "required" }]);
  }
  if (options.execute && !options.reason?.trim()) {
    throw new ValidationError(`refusing to ${verb} without a reason: --execute needs --reason "<why>"`, [
      { path: "reason", message: "required with --execute" },
    ]);
  }
  const actor = resolveActor(options.actor);
  const reason = options.reason?.trim() || null;

  const planned = await readAsOperator(db, async (tx) => {
    const selection = await resolveSelection(tx, { stream: target.stream, concern: target.concern }, { defaultLimit: 1 });
    const switches: StreamSwitch[] = [];
    for (const pair of selection.pairs) {
      switches.push({
        stream: pair.stream,
        concern: pair.concern,
        wasDisabled: pair.disabled,
        disabled,
        changes: pair.disabled !== disabled,
        waiting: await countWaiting(tx, { ...selection, pairs: [pair] }),
        requeued: 0,
      });
    }
    return switches;
  });
  const report: SwitchReport = { verb, dryRun: !options.execute, actor, reason, switches: planned };
  if (!options.execute) return report;

  // One transaction: a concern that consumes several streams is switched on all of them or none.
  await inTransaction(db, OPERATOR, async (tx) => {
    for (const s of planned) {
      const result = await setStreamDisabled(tx, s.stream, s.concern, disabled, { actor, reason: reason! });
      s.changes = result.changed;
      s.requeued = result.requeued;
    }
  });
  return report;
}
