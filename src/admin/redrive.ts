import os from "node:os";
import { sql } from "kysely";
import { inTransaction, type Db, type Tx } from "../db/database";
import { Channel } from "../entities/entity.schemas";
import { getEntity } from "../entities/entity.repository";
import { ConflictError, NotFoundError, ValidationError, coerceError } from "../errors/errors";
import { NotificationRecordTypes, ResendNotificationOp, ResendRequestedEvent } from "../notification/notification.schemas";
import { categoryOf, channelStream, destinationNow, latestSendOutcome, resendOperationId } from "../notification/resend";
import { appendOne } from "../streams/append";
import { getHandling, getHistory, queueHandling, setStreamDisabled, transition } from "../streams/handling";
import type { HandlingStatus } from "../streams/interfaces";
import { allChannels, channelOf } from "../notification/channels";
import { Streams } from "../notification/streams";
import { readTrail, type TrailRecord } from "../streams/trail";
import { AVAILABLE_STATUSES, type HandlingAction } from "../streams/transitions";
import { DEFAULT_STUCK_AFTER, parseDuration, resolveSelection, selectRecords, type SelectedRecord, type Selection, type SelectionInput, type SelectionResult } from "./selection";

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
  action: Exclude<HandlingAction, "claim" | "handle" | "disable_for_record">;
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
    throw new ValidationError(`refusing to ${verb} without a reason: --execute needs --reason "<why>", which is kept in the handling history`, [
      { path: "reason", message: "required with --execute" },
    ]);
  }
  if (options.reason !== undefined && options.reason.length > 2000) {
    throw new ValidationError("reason must be at most 2000 characters", [{ path: "reason", message: "at most 2000 characters" }]);
  }
  if (verb === "redrive-completed" && options.execute && !options.confirmCompleted) {
    throw new ValidationError(
      "refusing to re-drive completed records: their work was done (an email sent, a message posted) and will be done again; " + "add --i-know-it-was-completed to confirm",
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
          await queueHandling(
            tx,
            group.stream,
            group.concern,
            group.changes.map((c) => c.position),
          );
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
    throw new ValidationError(`refusing to ${verb} without a reason: --execute needs --reason "<why>"`, [{ path: "reason", message: "required with --execute" }]);
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

// --- Resending a notification from the entity as it is now --------------------

/**
 * A re-drive repeats a failed channel operation as it was, to the address it
 * was prepared with. A resend is the other repair: the notification's failed
 * channels are prepared again from the entity as it is NOW (a corrected
 * Slack channel, a new email address), as new channel operations linked to
 * the failed ones. The operator writes one record, a ResendNotificationOp on
 * notification.internal_operations, with who and why and the operations it
 * replaces; internal_operation_bot prepares it (src/notification/resend.ts).
 * In the same transaction the failed operations it replaces are archived
 * (Failed → ArchivedAfterFailure, by the operator, details naming the
 * request): they no longer wait for an operator, a re-drive can no longer
 * send them to the old address as well, and the change is in audit.redrives.
 */

export interface ResendInput {
  notificationId: string;
  /** The failed channels to resend; default: every channel whose latest outcome failed. */
  channels?: readonly string[];
  /** Who; defaults to the OS user. */
  actor?: string;
  /** Why; required to execute. Kept in the request and the handling history. */
  reason?: string;
  /** Act; without it nothing changes and the report says what would. */
  execute?: boolean;
}

export interface ResendChannel {
  channel: Channel;
  /** The failed operation the resend replaces. */
  previous: {
    operationId: string;
    stream: string;
    position: number;
    destination: string;
    error: string | null;
    /** Its handling by the channel's bot: Failed (archived by the resend) or ArchivedAfterFailure. */
    status: HandlingStatus;
    concern: string;
  };
  /** Where it goes now, from the entity as it is; null when skipped. */
  destination: string | null;
  /** Why the channel cannot be resent now (opted out, no contact detail, the entity is gone); null when it can. */
  skipped: string | null;
  /** The new operation's id (when not skipped). */
  operationId: string | null;
}

export interface ResendReport {
  verb: "resend";
  dryRun: boolean;
  notificationId: string;
  entityId: string;
  /** The entity's version the new destinations come from (null: the entity no longer exists). */
  entityVersion: number | null;
  actor: string;
  reason: string | null;
  /** The outcome being repaired. */
  outcome: { type: string; stream: string; position: number };
  channels: ResendChannel[];
  /** Executed: the ResendNotificationOp written. */
  request: { stream: string; position: number } | null;
  /** Executed: the failed operations archived (those already archived are left as they are). */
  archived: Array<{ stream: string; position: number; concern: string }>;
  warnings: string[];
}

const NOT_SENT_TYPES = ["CouldNotGetOrUseAudienceEvent", "AudienceOptedOutOfAllChannelsEvent", "CouldNotPrepareToSendOnAnyChannelEvent"];

function checkResendInput(input: ResendInput): { id: string; channels: Channel[] | null } {
  const issues: { path: string; message: string }[] = [];
  const id = input.notificationId?.trim() ?? "";
  if (id === "" || id.length > 200) issues.push({ path: "notification", message: "a tracking id of 1 to 200 characters is required" });
  let channels: Channel[] | null = null;
  if (input.channels !== undefined && input.channels.length > 0) {
    channels = [];
    for (const raw of input.channels) {
      const parsed = Channel.safeParse(raw.trim().toLowerCase());
      if (!parsed.success) issues.push({ path: "channel", message: `unknown channel "${raw}": use ${Channel.options.join(" or ")}` });
      else if (!channels.includes(parsed.data)) channels.push(parsed.data);
    }
  }
  if (input.reason !== undefined && input.reason.length > 2000) issues.push({ path: "reason", message: "at most 2000 characters" });
  if (issues.length > 0) throw ValidationError.fromIssues("resend", issues);
  if (input.execute && !input.reason?.trim()) {
    throw new ValidationError(`refusing to resend without a reason: --execute needs --reason "<why>", which is kept with the request`, [
      { path: "reason", message: "required with --execute" },
    ]);
  }
  return { id, channels };
}

/** What a resend of this notification would do now, or why it cannot be done. Read-only. */
async function planResend(tx: Tx, id: string, wanted: Channel[] | null): Promise<Omit<ResendReport, "dryRun" | "actor" | "reason" | "request" | "archived">> {
  // Everything about the notification, with its handling, in one read (the engine's readTrail).
  const trail = await readTrail(tx, [id], {
    streams: [Streams.notificationClientOperations, Streams.notificationInternalOperations, Streams.notificationEvents, ...allChannels.map((c) => c.streams.operations)],
  });
  const inStream = (stream: string) => trail.filter((r) => r.stream === stream).sort((a, b) => a.position - b.position);
  const handlingOf = (record: TrailRecord, concern: string) => record.handling.find((h) => h.concern === concern)!;
  const events = inStream(Streams.notificationEvents);
  const created = events.find((e) => e.type === "SendNotificationRequestedEvent");
  if (!created) {
    const asked = inStream(Streams.notificationClientOperations).length > 0;
    if (asked) throw new ConflictError(`notification ${id} has not been prepared yet: nothing has failed to resend`);
    throw new NotFoundError(`unknown notification "${id}": no notification has this tracking id`);
  }
  const entityId = (created.payload as { entityId: string }).entityId;

  // One request at a time: a second one would resend the same channels twice.
  const requests = inStream(Streams.notificationInternalOperations).filter((r) => r.type === NotificationRecordTypes.ResendNotificationOp);
  for (const r of requests) {
    const handling = handlingOf(r, "internal_operation_bot");
    if (handling.status === "Completed" || handling.status === "ArchivedAfterFailure") continue;
    const asked = ResendNotificationOp.safeParse(r.payload);
    const by = asked.success ? ` by ${asked.data.requestedBy}` : "";
    throw new ConflictError(
      `a resend of notification ${id} is already waiting to be handled (${r.stream} #${r.position}, asked${by} at ${r.recordedAt.toISOString()}, ` +
        `handling ${handling.status}${handling.lastError ? `: ${handling.lastError}` : ""}): wait for it` +
        (handling.status === "Failed" ? `, or re-drive it (redrive-failed --stream ${r.stream} --notification ${id})` : ""),
    );
  }

  const latest = latestSendOutcome(events);
  const underway = events.filter((e) => e.type === "ResendRequestedEvent" && ResendRequestedEvent.parse(e.payload).operations.length > 0).at(-1);
  if (underway && (!latest || underway.position > latest.record.position)) {
    throw new ConflictError(`a resend of notification ${id} is under way (notification.events #${underway.position}, ${underway.recordedAt.toISOString()}): wait for its outcome`);
  }
  if (!latest) {
    const notSent = events.filter((e) => NOT_SENT_TYPES.includes(e.type)).at(-1);
    if (notSent) {
      throw new ConflictError(
        `nothing to resend: notification ${id} ended with ${notSent.type} before any channel operation was prepared; send a new notification once the entity is put right`,
      );
    }
    throw new ConflictError(`nothing failed to resend: notification ${id} is still being sent (no outcome yet)`);
  }

  const failed = latest.outcome.operations.filter((o) => o.outcome === "failed");
  const failedChannels = [...new Set(failed.map((o) => o.channel))];
  let channels: Channel[];
  if (wanted) {
    for (const channel of wanted) {
      if (failedChannels.includes(channel)) continue;
      const op = latest.outcome.operations.find((o) => o.channel === channel);
      throw new ConflictError(
        `nothing failed to resend on ${channel}: ` +
          (op ? `its latest operation ${op.operationId} ${op.outcome}` : `notification ${id} has no ${channel} operation`) +
          ` (${latest.record.type})`,
      );
    }
    channels = wanted;
  } else if (failedChannels.length === 0) {
    throw new ConflictError(`nothing failed to resend: notification ${id} ended with ${latest.record.type}`);
  } else if (latest.record.type === "SentOnAllPreparedChannelsEvent") {
    // delivery: fallback delivered it on another channel: the notification is not failed.
    throw new ConflictError(
      `nothing failed to resend: notification ${id} was delivered${latest.outcome.deliveredBy ? ` by ${latest.outcome.deliveredBy}` : ""} ` +
        `after ${failedChannels.join(", ")} failed; name --channel ${failedChannels[0]} to send there as well`,
    );
  } else {
    channels = failedChannels;
  }

  const current = await getEntity(tx, entityId);
  const n = requests.length + 1;
  const planned: ResendChannel[] = [];
  for (const channel of channels) {
    for (const outcome of failed.filter((o) => o.channel === channel)) {
      const stream = channelStream(channel);
      const record = inStream(stream).find((r) => (r.payload as { operationId?: string }).operationId === outcome.operationId);
      if (!record) throw new NotFoundError(`the failed ${channel} operation ${outcome.operationId} of notification ${id} is not in ${stream}`);
      const concern = channelOf(channel).concern;
      const handling = handlingOf(record, concern);
      if (handling.status !== "Failed" && handling.status !== "ArchivedAfterFailure") {
        throw new ConflictError(
          `the failed ${channel} operation ${outcome.operationId} (${stream} #${record.position}) is ${handling.status} for ${concern}: ` +
            `it may still send, and a resend now could deliver twice; wait until it ends (npm run redrive -- list --notification ${id})`,
        );
      }
      const target = destinationNow(current?.entity ?? null, channel, categoryOf(events));
      planned.push({
        channel,
        previous: {
          operationId: outcome.operationId,
          stream,
          position: record.position,
          destination: channelOf(channel).destinationOf(record.payload),
          error: outcome.error ?? handling.lastError,
          status: handling.status,
          concern,
        },
        destination: "destination" in target ? target.destination : null,
        skipped: "skipped" in target ? target.skipped : null,
        operationId: "destination" in target ? resendOperationId(id, channel, n) : null,
      });
    }
  }
  const warnings: string[] = [];
  const usable = planned.filter((c) => c.skipped === null);
  if (usable.length === 0) {
    warnings.push(`nothing can be resent now (${planned.map((c) => `${c.channel}: ${c.skipped}`).join("; ")}): put the entity right first`);
  } else {
    for (const c of planned.filter((p) => p.skipped !== null)) warnings.push(`${c.channel} would be skipped: ${c.skipped}`);
    for (const c of usable.filter((p) => p.destination === p.previous.destination)) {
      warnings.push(`${c.channel} goes to the same destination as before (${c.destination}); if the failure was on the other side, redrive-failed repeats the operation as it was`);
    }
  }
  return {
    verb: "resend",
    notificationId: id,
    entityId,
    entityVersion: current?.version ?? null,
    outcome: { type: latest.record.type, stream: latest.record.stream, position: latest.record.position },
    channels: planned,
    warnings,
  };
}

/**
 * `resend`: prepare a notification's failed channels again from the entity as
 * it is now. A dry run (the default) reports, per channel, the failed
 * operation, its old destination and the new one, or why the channel would be
 * skipped; with `execute` (and a reason) it writes the ResendNotificationOp
 * and archives the failed operations it replaces, in one transaction.
 * Refused: an unknown notification, nothing failed to resend, a resend
 * already waiting or under way, a failed operation still being handled.
 */
export async function resendNotification(db: Db, input: ResendInput): Promise<ResendReport> {
  const { id, channels } = checkResendInput(input);
  const actor = resolveActor(input.actor);
  const reason = input.reason?.trim() || null;
  if (!input.execute) {
    const plan = await readAsOperator(db, (tx) => planResend(tx, id, channels));
    return { ...plan, dryRun: true, actor, reason, request: null, archived: [] };
  }
  return inTransaction(db, OPERATOR, async (tx) => {
    // Two operators resending one notification at once take turns; the second then finds the first's request.
    await sql`select pg_advisory_xact_lock(hashtextextended(${`resend ${id}`}, 0))`.execute(tx);
    const plan = await planResend(tx, id, channels);
    if (plan.channels.every((c) => c.skipped !== null)) {
      throw new ConflictError(`refusing to resend notification ${id}: ${plan.warnings[0] ?? "nothing can be resent"}`);
    }
    const payload = ResendNotificationOp.parse({
      ...(channels ? { channels } : {}),
      requestedBy: actor,
      reason: reason!,
      previous: plan.channels.map((c) => ({
        channel: c.channel,
        operationId: c.previous.operationId,
        stream: c.previous.stream,
        position: c.previous.position,
        destination: c.previous.destination,
      })),
    });
    const request = await appendOne(tx, Streams.notificationInternalOperations, {
      id,
      type: NotificationRecordTypes.ResendNotificationOp,
      payload,
      // Who asked, where audit.records (which leaves payloads out) shows it.
      tags: { requested_by: actor },
      causedBy: { stream: plan.outcome.stream, position: plan.outcome.position },
    });
    const requestRef = { stream: Streams.notificationInternalOperations, position: request.position };
    const archived: ResendReport["archived"] = [];
    for (const c of plan.channels) {
      // A channel skipped now (opted out, no contact detail) is not resent: its failure still waits for an operator.
      if (c.previous.status !== "Failed" || c.skipped !== null) continue;
      const target = { stream: c.previous.stream, position: c.previous.position, concern: c.previous.concern };
      await transition(tx, target, "archive_failure", {
        actor,
        reason: reason!,
        details: { tool: "redrive", verb: "resend", resentBy: requestRef, archived: { operationId: c.previous.operationId, lastError: c.previous.error } },
      });
      archived.push(target);
    }
    return { ...plan, dryRun: false, actor, reason, request: requestRef, archived };
  });
}
