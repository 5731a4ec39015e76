import type { JobHelpers, Task } from "graphile-worker";
import { ZodError } from "zod";
import { asActor, databaseNow, inSavepointAs, inTransaction, type Tx } from "../db/database";
import { ExternalError, ForbiddenError, NotFoundError, TidingsError, ValidationError, coerceError } from "../errors/errors";
import type { Logger } from "../logging/logger";
import { AppendBuffer } from "../streams/append";
import { claim, claimManyWithRecords, completeMany, countActions, getHistory, queueHandling, transition } from "../streams/handling";
import type { HandlingState, StreamRecord } from "../streams/interfaces";
import { getByPosition } from "../streams/read";
import { BatchQueue, type BatchItem } from "./batch";
import { wakeCatchUps } from "./catchUp";
import { INLINE_CLAIM_PREFIX } from "./inline";
import {
  taskIdentifier,
  type AnyBot,
  type Bot,
  type BotRuntime,
  type ExternalBot,
  type HandledOutcome,
  type HandlerContext,
  type InlineReservation,
  type PreviousAttempt,
  type TransactionalBot,
} from "./bot";

/**
 * The bot runner: one pipeline for every job. A job is a batch of one; jobs
 * of a bot that declares `batch` arriving together are handled as one batch
 * (see BatchQueue). For a batch:
 *
 * 1. claim the records and load them (`claimAndLoad`), in one transaction
 *    with the handler (transactional bots) or with `prepare` (external bots);
 * 2. external bots only: send, concurrently, with no transaction open;
 * 3. record the outcomes: completion, a self-cancel, or a failure with its
 *    retry (`recordFailure`).
 *
 * If a batch of several fails as a whole, each of its records is handled
 * again alone, so one bad record cannot hold the others back; a record that
 * fails alone has its failure recorded.
 */

/** What the outbox (and tidings.queue_handling) puts in each job: a pointer to a record, not a copy. */
function parseJobPayload(payload: unknown, bot: Pick<Bot<unknown>, "stream">): number {
  const p = payload as { stream?: unknown; position?: unknown } | null;
  if (!p || p.stream !== bot.stream || typeof p.position !== "number" || !Number.isSafeInteger(p.position)) {
    throw new ValidationError(`job payload ${JSON.stringify(payload)} is not a record of ${bot.stream}`);
  }
  return p.position;
}

/** A record's payload, parsed with the bot's schema for its type: the one way records reach a handler. */
function parseRecord(bot: Pick<Bot<unknown>, "schemas" | "concern">, record: StreamRecord): StreamRecord {
  if (!bot.schemas) return record;
  const schema = bot.schemas[record.type];
  if (!schema) throw new ValidationError(`${bot.concern} does not handle records of type ${record.type}`);
  const parsed = schema.safeParse(record.payload);
  if (!parsed.success) throw ValidationError.fromZod(parsed.error, `${record.type} payload of record ${record.position} of ${record.stream}`);
  return { ...record, payload: parsed.data };
}

/** Batches of one transactional bot that may run at once (each is one transaction). */
const BATCHES_IN_PARALLEL = 2;
/**
 * Batches of one external bot that may run at once: a batch lasts as long as
 * its slowest send, and sends wait on the network, not on the database. With
 * 2, a job arriving behind two slow batches waited for them (bench:profile at
 * 77/s: claim p50 62 ms with 8 against 89 ms with 2; noisy).
 */
const SEND_BATCHES_IN_PARALLEL = 8;

/** Records of one sender a process sends inline at once, at most: what its jobs may (SEND_BATCHES_IN_PARALLEL batches of 32). */
const INLINE_SENDS_IN_FLIGHT = SEND_BATCHES_IN_PARALLEL * 32;

/** Tries to commit a send's outcome before the job is handed back (≈ 3 s in all). */
const AFTER_SEND_TRIES = 5;

/** "Come back later" answers honoured before a rate limit counts as a failure. */
const MAX_DEFERRALS = 20;

/** Exponential backoff with ±20% jitter, capped. */
export function backoffMs(attempt: number, baseMs: number, maxMs: number, random = Math.random): number {
  const raw = Math.min(maxMs, baseMs * 2 ** Math.max(0, attempt - 1));
  return Math.max(1, Math.round(raw * (0.8 + 0.4 * random())));
}

/** A scheduled delay, ±10%: retries of many records failed together do not come back together. */
export function jitter(ms: number, random = Math.random): number {
  return Math.max(1, Math.round(ms * (0.9 + 0.2 * random())));
}

/** "300 ms", "61 s", "15 min", "4.0 h": for reasons an operator reads. */
function formatDelay(ms: number): string {
  if (ms < 1_000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1_000)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/** Transient failures are retried with backoff; permanent ones fail the record now. */
export function classify(error: Error): { transient: boolean; retryAfterMs?: number } {
  if (error instanceof ExternalError) return { transient: error.transient, retryAfterMs: error.retryAfterMs };
  if (error instanceof ValidationError || error instanceof ZodError || error instanceof NotFoundError || error instanceof ForbiddenError) {
    return { transient: false };
  }
  // Anything else (a lost database connection, a bug) may pass: retry, bounded by maxAttempts.
  return { transient: true };
}

/**
 * A send the worker stopped waiting for (its shutdown grace was over). Nothing
 * is recorded: the record stays Running under its job, in doubt, and the next
 * claim of it (the same job, retried or handed over by the lease) finds the
 * attempt abandoned and tells the bot (`previousAttempt.abandoned`).
 */
class CutShortError extends Error {
  constructor(position: number, stream: string) {
    super(`the worker stopped while record ${position} of ${stream} was being sent; left Running, in doubt`);
    this.name = "CutShortError";
  }
}

/** A bot that sends inline (ExternalBot.sendsInline), with the bots that follow its successes inline. */
export interface InlineSender<TDeps> {
  bot: ExternalBot<TDeps, unknown>;
  followers: readonly TransactionalBot<TDeps>[];
}

/**
 * Turn a bot into a graphile-worker task. `followers`: the bots of the same
 * process that follow this bot's appends inline (TransactionalBot.followsInline);
 * `senders`: those that send what it appends inline (ExternalBot.sendsInline).
 */
export function createTask<TDeps>(bot: Bot<TDeps>, rt: BotRuntime<TDeps>, followers: readonly TransactionalBot<TDeps>[] = [], senders: readonly InlineSender<TDeps>[] = []): Task {
  const parallel = bot.kind === "transactional" ? BATCHES_IN_PARALLEL : SEND_BATCHES_IN_PARALLEL;
  const batches = bot.batch ? new BatchQueue(bot.batch.maxSize, parallel, (items) => handleBatch(bot, rt, items, followers, senders)) : null;
  return async (payload: unknown, helpers: JobHelpers) => {
    const item: BatchItem = { position: parseJobPayload(payload, bot), jobTag: `job ${helpers.job.id}` };
    const started = performance.now();
    let outcome: HandledOutcome = "error";
    try {
      outcome = batches ? await batches.submit(item) : (await handleBatch(bot, rt, [item], followers, senders)).get(item)!;
    } finally {
      rt.onHandled?.({
        task: taskIdentifier(bot),
        stream: bot.stream,
        concern: bot.concern,
        outcome,
        durationMs: performance.now() - started,
      });
    }
    // Failing the job hands it back to graphile-worker: the record, still Running, is taken up again.
    if (outcome === "in_doubt") throw new CutShortError(item.position, bot.stream);
  };
}

/** How each job of a batch ended. */
export type BatchOutcomes = Map<BatchItem, HandledOutcome>;

/**
 * Handle a batch of jobs of one bot: the runner's pipeline (see the top of
 * this file). Exported so tests can run a bot without workers.
 */
export async function handleBatch<TDeps>(
  bot: Bot<TDeps>,
  rt: BotRuntime<TDeps>,
  items: readonly BatchItem[],
  followers: readonly TransactionalBot<TDeps>[] = [],
  senders: readonly InlineSender<TDeps>[] = [],
): Promise<BatchOutcomes> {
  return new Pipeline(bot, rt, followers, senders).run(items, false);
}

/** The bots among these that may follow what `appender` appends, inline: set-based followers (of whatever streams it appends to). */
export function inlineFollowersOf<TDeps>(appender: Bot<TDeps>, bots: readonly AnyBot<TDeps>[]): TransactionalBot<TDeps>[] {
  if (appender.kind !== "external") return [];
  return bots.filter((b): b is TransactionalBot<TDeps> => b.kind === "transactional" && b.followsInline !== undefined && b.handleBatch !== undefined);
}

/** The bots among these that send inline what `appender` (a transactional bot) appends to their streams. */
export function inlineSendersOf<TDeps>(appender: Bot<TDeps>, bots: readonly AnyBot<TDeps>[]): InlineSender<TDeps>[] {
  if (appender.kind !== "transactional") return [];
  return bots.filter(isInlineSender).map((sender) => ({ bot: sender, followers: inlineFollowersOf(sender, bots) }));
}

/** An external bot that sends inline (ExternalBot.sendsInline). */
export function isInlineSender<TDeps>(bot: AnyBot<TDeps>): bot is ExternalBot<TDeps, unknown> {
  return bot.kind === "external" && bot.sendsInline === true;
}

/** A claimed record's send, settled. */
type Settled<TResult> = Claimed & ({ ok: true; result: TResult } | { ok: false; error: Error });

/** Records claimed inline in a transactional bot's transaction, to send once it commits. */
interface InlineBatch<TDeps> {
  sender: InlineSender<TDeps>;
  /** The sender's pipeline, which claimed them and sends them. */
  pipeline: Pipeline<TDeps>;
  claimed: Claimed[];
  /** Held from before the commit until the outcomes are recorded. */
  reservation: InlineReservation;
}

/** A failure of an external batch before any send: its claims rolled back, so it may be handled again or recorded. */
class NothingSent extends Error {
  constructor(override readonly cause: unknown) {
    super("the batch failed before sending", { cause });
  }
}

/** A claimed record: its job, its handling state (Running) and its record as stored. */
interface Claimed {
  item: BatchItem;
  state: HandlingState;
  record: StreamRecord;
}

class Pipeline<TDeps> {
  private readonly target: { stream: string; concern: string };
  private readonly logger: Logger;

  constructor(
    private readonly bot: Bot<TDeps>,
    private readonly rt: BotRuntime<TDeps>,
    private readonly followers: readonly TransactionalBot<TDeps>[] = [],
    private readonly senders: readonly InlineSender<TDeps>[] = [],
  ) {
    this.target = { stream: bot.stream, concern: bot.concern };
    this.logger = rt.logger.child({ task: taskIdentifier(bot) });
  }

  /** `alone`: a record of a batch that failed as a whole, handled again on its own (by `handle`, never `handleBatch`). */
  async run(items: readonly BatchItem[], alone: boolean): Promise<BatchOutcomes> {
    const outcomes: BatchOutcomes = new Map();
    // Two jobs for one record in the same batch: the first one handles it, the other has nothing left to do.
    const firsts = new Map<number, BatchItem>();
    for (const item of items) if (!firsts.has(item.position)) firsts.set(item.position, item);
    const unique = [...firsts.values()];
    try {
      const handled = this.bot.kind === "transactional" ? await this.transactional(this.bot, unique, alone) : await this.external(this.bot, unique);
      for (const [item, outcome] of handled) outcomes.set(item, outcome);
    } catch (caught) {
      // After a send, a failure is not "nothing happened": the job fails and its next run finds the attempt abandoned.
      if (this.bot.kind === "external" && !(caught instanceof NothingSent)) throw caught;
      const thrown = caught instanceof NothingSent ? caught.cause : caught;
      if (unique.length > 1) {
        for (const item of unique) for (const [one, outcome] of await this.run([item], true)) outcomes.set(one, outcome);
      } else {
        // The claim rolled back with the failure: claim again, so the failed attempt is counted and recorded.
        const error = coerceError(thrown);
        await this.inTransaction(async (tx) => {
          for (const c of await this.claimAndLoad(tx, unique)) outcomes.set(c.item, await this.recordFailure(tx, c, error, null));
        });
      }
    }
    for (const item of items) if (!outcomes.has(item)) outcomes.set(item, "skipped");
    return outcomes;
  }

  private async inTransaction<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const result = await inTransaction(this.rt.db, this.bot.actor, fn);
    // Committed: catch-up bots in a long idle pause (the projection, the webhook dispatcher) look again.
    wakeCatchUps();
    return result;
  }

  /**
   * Deadlines and "now" are the database's (its transaction's start), whatever
   * this process's clock says. `stamped`: the updated_at of a handling row
   * written in this transaction, which the engine stamps with now(): the same
   * time without a round trip of its own.
   */
  private async now(tx: Tx, stamped?: Date | null): Promise<Date> {
    return this.rt.clock?.() ?? stamped ?? (await databaseNow(tx));
  }

  private loggerFor(c: Claimed): Logger {
    return this.logger.child({ position: c.record.position, job: c.item.jobTag });
  }

  private context(tx: Tx, c: Claimed, record: StreamRecord, now: Date, out?: AppendBuffer): HandlerContext<TDeps> {
    return { tx, record, attempt: c.state.attempts, deps: this.rt.deps, logger: this.loggerFor(c), now, ...(out ? { out } : {}) };
  }

  /**
   * Claim these jobs' records and read them, in one statement. A record not
   * claimed that way may be Running under the same job: an earlier run of the
   * job died (worker killed, connection lost, cut short at shutdown) before
   * recording an outcome; that attempt is cancelled, with the reason, and the
   * record claimed again. Anything else (done, held by another job, disabled)
   * is skipped. `handle`: claim and complete at once (claimManyWithRecords).
   */
  private async claimAndLoad(tx: Tx, items: readonly BatchItem[], options: { handle?: boolean } = {}): Promise<Claimed[]> {
    const claimedRows = await claimManyWithRecords(
      tx,
      this.target,
      items.map((i) => ({ position: i.position, claimedBy: i.jobTag })),
      this.bot.actor,
      options,
    );
    const byPosition = new Map(claimedRows.map((c) => [c.record.position, c]));
    const claimed: Claimed[] = [];
    for (const item of items) {
      const row = byPosition.get(item.position);
      if (row) {
        claimed.push({ item, ...row });
        continue;
      }
      const state = await this.reclaimAbandoned(tx, item);
      if (!state) continue;
      const record = await getByPosition(tx, this.bot.stream, item.position);
      if (!record) throw new NotFoundError(`stream ${this.bot.stream} has no record at position ${item.position}`);
      claimed.push({ item, state, record });
    }
    return claimed;
  }

  private async reclaimAbandoned(tx: Tx, item: BatchItem): Promise<HandlingState | null> {
    const target = { ...this.target, position: item.position };
    const by = { actor: this.bot.actor, claimedBy: item.jobTag, reason: `claimed by ${item.jobTag}` };
    let result = await claim(tx, target, by);
    if (!result.claimed && result.state.status === "Running" && result.state.claimedBy === item.jobTag) {
      await transition(tx, target, "cancel", {
        actor: "runner",
        reason: `attempt ${result.state.attempts} by ${item.jobTag} was abandoned before recording an outcome; handling again`,
      });
      result = await claim(tx, target, by);
    }
    if (result.claimed) return result.state;
    this.logger.debug({ position: item.position, job: item.jobTag, why: result.why }, "nothing to do");
    return null;
  }

  /** Put a record back to be handled again after `retryInMs` (a handler's own request, or the other side's Retry-After): not a failure. */
  private async selfCancel(
    tx: Tx,
    position: number,
    why: { reason: string; retryInMs: number; error?: string; details?: Record<string, unknown>; attempt?: number },
  ): Promise<void> {
    await transition(tx, { ...this.target, position }, "self_cancel", {
      actor: this.bot.actor,
      ...(why.attempt !== undefined ? { attempt: why.attempt } : {}),
      reason: why.reason,
      ...(why.error !== undefined ? { error: why.error } : {}),
      details: { retryInMs: why.retryInMs, ...why.details },
    });
    await queueHandling(tx, this.bot.stream, this.bot.concern, [position], why.retryInMs);
  }

  /**
   * Claim, handle and complete in one transaction: a crash leaves nothing
   * half-done. Records are handed over ordered by id (then position), so
   * per-id advisory locks are always taken in the same order and two batches
   * cannot deadlock; with `coalesceById` only the newest record of each id
   * is handed over and the others complete with it. A set-based handler
   * (handleBatch) completes every record it is given, so its records are
   * claimed and completed in one step (action `handle`): one handling write
   * and one history entry each.
   */
  private async transactional(bot: TransactionalBot<TDeps>, items: readonly BatchItem[], alone: boolean): Promise<BatchOutcomes> {
    const outcomes: BatchOutcomes = new Map();
    // A batch of one goes to handle(), which may self-cancel (a scheduled notification that came early).
    const setBased = bot.handleBatch !== undefined && !alone && items.length > 1;
    // Records claimed inline are this process's from before the commit (InlineSends.reserve): released if it rolls back.
    const reserved: InlineReservation[] = [];
    const inline = await this.inTransaction(async (tx): Promise<InlineBatch<TDeps>[]> => {
      const claimed = (await this.claimAndLoad(tx, items, { handle: setBased })).map((c) => ({ ...c, parsed: parseRecord(bot, c.record) }));
      if (claimed.length === 0) return [];
      claimed.sort((a, b) => (a.record.id < b.record.id ? -1 : a.record.id > b.record.id ? 1 : a.record.position - b.record.position));
      const toHandle = bot.batch?.coalesceById ? claimed.filter((c, i) => i === claimed.length - 1 || claimed[i + 1]!.record.id !== c.record.id) : claimed;
      const now = await this.now(tx, claimed[0]!.state.updatedAt);
      const selfCancelled = new Set<BatchItem>();
      const out = new AppendBuffer();
      if (setBased) {
        await bot.handleBatch!({ tx, records: toHandle.map((c) => c.parsed), deps: this.rt.deps, logger: this.logger, now, out });
      } else {
        for (const c of toHandle) {
          const outcome = await bot.handle(this.context(tx, c, c.parsed, now, out));
          if (!outcome) continue;
          await this.selfCancel(tx, c.record.position, { reason: outcome.reason, retryInMs: outcome.retryAfterMs, attempt: c.state.attempts });
          selfCancelled.add(c.item);
        }
      }
      const inlineBatches = await this.claimInline(tx, await out.flush(tx), now, reserved);
      // Those claimed Running (one at a time, or taken over from an abandoned attempt) complete now.
      const completed = claimed.filter((c) => !selfCancelled.has(c.item) && c.state.status === "Running");
      await completeMany(
        tx,
        this.target,
        completed.map((c) => ({ position: c.record.position, attempt: c.state.attempts })),
        bot.actor,
      );
      for (const c of claimed) outcomes.set(c.item, selfCancelled.has(c.item) ? "self_cancelled" : "completed");
      return inlineBatches;
    }).catch((error: unknown) => {
      for (const r of reserved) r.release();
      throw error;
    });
    // Committed: the records claimed inline are sent now, while this bot takes its next batch.
    this.sendInline(inline);
    return outcomes;
  }

  /**
   * Claim, as each inline sender's actor in a savepoint, the records of its
   * stream this transaction appended, and run its `prepare`: the claim
   * transaction of their jobs, folded into this one. The outbox queues no job
   * for a record claimed so (its reader skips records Running under an inline
   * claim of their own transaction). A sender whose claim fails rolls back
   * alone, and its records get their jobs as usual.
   */
  private async claimInline(
    tx: Tx,
    appended: ReadonlyArray<{ stream: string; position: number; type: string }>,
    now: Date,
    reserved: InlineReservation[],
  ): Promise<InlineBatch<TDeps>[]> {
    const inline = this.rt.inline;
    if (!inline || appended.length === 0) return [];
    const batches: InlineBatch<TDeps>[] = [];
    const jobTag = `${INLINE_CLAIM_PREFIX}${inline.processId}`;
    for (const sender of this.senders) {
      const schemas = sender.bot.schemas;
      const positions = appended.filter((r) => r.stream === sender.bot.stream && (!schemas || r.type in schemas)).map((r) => r.position);
      if (positions.length === 0) continue;
      // Bounded like the sender's own jobs: past that, the records wait for their jobs (a slow server cannot pile up sends in memory).
      if (inline.count(sender.bot.stream, sender.bot.concern) + positions.length > INLINE_SENDS_IN_FLIGHT) continue;
      // Reserved before the claim, in the same tick as the check: concurrent batches cannot overshoot the bound,
      // and the hand-over of claims (recoverInlineClaims) sees these as this process's from the moment they commit.
      const reservation = inline.reserve(sender.bot.stream, sender.bot.concern, positions);
      reserved.push(reservation);
      const pipeline = new Pipeline(sender.bot, this.rt, sender.followers);
      try {
        const claimed = await inSavepointAs(tx, "claim_inline", sender.bot.actor, this.bot.actor, () =>
          pipeline.claimAndPrepare(
            sender.bot,
            tx,
            positions.map((position) => ({ position, jobTag })),
            new Map(),
            now,
          ),
        );
        if (claimed.length > 0) batches.push({ sender, pipeline, claimed, reservation });
        else reservation.release();
      } catch (error) {
        reservation.release();
        this.logger.warn({ err: error, sender: taskIdentifier(sender.bot), positions }, "claiming inline failed; the records' jobs are queued as usual");
      }
    }
    return batches;
  }

  /**
   * Send what claimInline claimed, every sender's at once, then record the
   * successes of all of them in one transaction (a notification's email and
   * Slack post reach its saga together: one commit, and no wait on the
   * saga's lock for the other channel's); if that fails, each sender records
   * its own as its jobs would. Tracked until recorded (InlineSends).
   */
  private sendInline(batches: readonly InlineBatch<TDeps>[]): void {
    if (batches.length === 0) return;
    const started = performance.now();
    const sending = (async () => {
      const settled = await Promise.all(batches.map((x) => x.pipeline.performAll(x.sender.bot, x.claimed)));
      const succeeded = batches.map((x, i) => ({ ...x, successes: settled[i]!.filter((s) => s.ok) })).filter((x) => x.successes.length > 0);
      let together = false;
      if (succeeded.length > 1) {
        try {
          await succeeded[0]!.pipeline.afterSend(async (tx) => {
            for (const [i, x] of succeeded.entries()) {
              const record = () => x.pipeline.recordSuccesses(tx, x.sender.bot, x.successes);
              await (i === 0 ? record() : asActor(tx, x.sender.bot.actor, record));
            }
          });
          together = true;
        } catch (error) {
          this.logger.warn({ err: error }, "recording inline sends together failed; each sender records its own");
        }
      }
      await Promise.all(
        batches.map(async (x, i) => {
          const bot = x.sender.bot;
          try {
            const outcomes = await x.pipeline.recordSettled(bot, settled[i]!, new Map(), together);
            const durationMs = performance.now() - started;
            for (const outcome of outcomes.values()) this.rt.onHandled?.({ task: taskIdentifier(bot), stream: bot.stream, concern: bot.concern, outcome, durationMs });
          } catch (error) {
            // Whatever is still Running under this process's claim, recoverInlineClaims hands over after the lease.
            this.logger.error(
              { err: error, task: taskIdentifier(bot), positions: x.claimed.map((c) => c.record.position) },
              "recording inline sends failed; any still Running are handed over after the lease",
            );
          }
        }),
      );
    })();
    for (const x of batches) x.reservation.until(sending);
  }

  /**
   * One transaction claims the records and runs `prepare` for each (if it
   * fails, nothing was claimed); the sends go out concurrently with no
   * transaction open; one transaction records every success (if it fails,
   * each on its own); failures are recorded one by one (each has its own
   * retry rules).
   */
  private async external<TResult>(bot: ExternalBot<TDeps, TResult>, items: readonly BatchItem[]): Promise<BatchOutcomes> {
    const outcomes: BatchOutcomes = new Map();
    const claimed = await this.inTransaction((tx) => this.claimAndPrepare(bot, tx, items, outcomes)).catch((error: unknown) => {
      throw new NothingSent(error);
    });
    return this.sendClaimed(bot, claimed, outcomes);
  }

  /** Claim the records and run `prepare` for each; those it puts off are self-cancelled (in `outcomes`), the others returned, ready to send. */
  async claimAndPrepare<TResult>(bot: ExternalBot<TDeps, TResult>, tx: Tx, items: readonly BatchItem[], outcomes: BatchOutcomes, now?: Date): Promise<Claimed[]> {
    const out = new AppendBuffer();
    const loaded = (await this.claimAndLoad(tx, items)).map((c) => ({ ...c, record: parseRecord(bot, c.record) }));
    const at = loaded.length > 0 && bot.prepare ? (now ?? (await this.now(tx, loaded[0]!.state.updatedAt))) : null;
    const ready: typeof loaded = [];
    for (const c of loaded) {
      const notYet = await bot.prepare?.(this.context(tx, c, c.record, at!, out));
      if (!notYet) {
        ready.push(c);
        continue;
      }
      await this.selfCancel(tx, c.record.position, { reason: notYet.reason, retryInMs: notYet.retryAfterMs, attempt: c.state.attempts });
      outcomes.set(c.item, "self_cancelled");
    }
    await out.flush(tx);
    return ready;
  }

  /** Send the claimed records concurrently, with no transaction open, then record the successes together and the failures one by one. */
  async sendClaimed<TResult>(bot: ExternalBot<TDeps, TResult>, claimed: readonly Claimed[], outcomes: BatchOutcomes): Promise<BatchOutcomes> {
    return this.recordSettled(bot, await this.performAll(bot, claimed), outcomes);
  }

  /** Every claimed record's send, concurrently, each settled with its result or error. */
  async performAll<TResult>(bot: ExternalBot<TDeps, TResult>, claimed: readonly Claimed[]): Promise<Array<Settled<TResult>>> {
    return Promise.all(
      claimed.map(async (c): Promise<Settled<TResult>> => {
        try {
          return { ...c, ok: true, result: await this.perform(bot, c) };
        } catch (thrown) {
          return { ...c, ok: false, error: coerceError(thrown) };
        }
      }),
    );
  }

  /**
   * Record how the sends went: the successes in one transaction (if it fails,
   * each on its own), unless `successesRecorded` (sendInline recorded them
   * with another sender's), then the failures one by one.
   */
  async recordSettled<TResult>(
    bot: ExternalBot<TDeps, TResult>,
    settled: ReadonlyArray<Settled<TResult>>,
    outcomes: BatchOutcomes,
    successesRecorded = false,
  ): Promise<BatchOutcomes> {
    // Sends cut short because the worker stopped waiting record nothing: they stay Running, in doubt.
    // A send that failed on its own before the cut is recorded as the failure it is.
    const cut = settled.filter((s) => !s.ok && s.error instanceof CutShortError);
    for (const s of cut) outcomes.set(s.item, "in_doubt");
    if (cut.length > 0) this.logger.warn({ positions: cut.map((s) => s.record.position) }, "sends cut short by shutdown; left Running, in doubt");

    const successes = settled.filter((s) => s.ok);
    if (successes.length > 0 && !successesRecorded) {
      const recordAll = (group: typeof successes) => this.afterSend((tx) => this.recordSuccesses(tx, bot, group));
      try {
        await recordAll(successes);
      } catch (error) {
        if (successes.length === 1) throw error;
        for (const s of successes) await recordAll([s]);
      }
    }
    for (const s of successes) outcomes.set(s.item, "completed");
    for (const s of settled) {
      if (s.ok || outcomes.has(s.item)) continue;
      outcomes.set(s.item, await this.afterSend((tx) => this.recordFailure(tx, s, s.error, s.record)));
    }
    return outcomes;
  }

  /**
   * Record sends that succeeded, in a transaction acting as this bot's actor:
   * completed first (the completion's stamp is the transaction's now, which
   * the events carry), then the success events, then the inline followers.
   */
  async recordSuccesses<TResult>(tx: Tx, bot: ExternalBot<TDeps, TResult>, group: ReadonlyArray<Settled<TResult> & { ok: true }>): Promise<void> {
    const { at } = await completeMany(
      tx,
      this.target,
      group.map((s) => ({ position: s.record.position, attempt: s.state.attempts })),
      bot.actor,
    );
    const out = new AppendBuffer();
    const now = await this.now(tx, at);
    for (const s of group) await bot.succeeded({ ...this.context(tx, s, s.record, now, out), result: s.result });
    const appended = await out.flush(tx);
    await this.followInline(tx, appended, now);
  }

  /**
   * The followers of this stream handle what this transaction just appended
   * (a send's success events), each as its own actor in a savepoint: the
   * same handling (claimed and completed at once) and handleBatch their jobs would run, committed
   * with the records, so the saga hears of a send without another job,
   * fetch and commit. A follower that fails rolls back alone; the outbox then
   * queues the records' jobs as usual.
   */
  private async followInline(tx: Tx, appended: ReadonlyArray<{ stream: string; position: number; type: string }>, now: Date): Promise<void> {
    for (const follower of this.followers) {
      const types = follower.followsInline!.recordTypes;
      const positions = appended.filter((r) => r.stream === follower.stream && types.includes(r.type)).map((r) => r.position);
      if (positions.length === 0) continue;
      const target = { stream: follower.stream, concern: follower.concern };
      const started = performance.now();
      try {
        await inSavepointAs(tx, "follow_inline", follower.actor, this.bot.actor, async () => {
          const by = `inline after ${taskIdentifier(this.bot)}`;
          const claimed = await claimManyWithRecords(
            tx,
            target,
            positions.map((position) => ({ position, claimedBy: by })),
            follower.actor,
            { handle: true },
          );
          const records = claimed.map((c) => parseRecord(follower, c.record)).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : a.position - b.position));
          await follower.handleBatch!({ tx, records, deps: this.rt.deps, logger: this.logger, now });
        });
      } catch (error) {
        this.logger.warn({ err: error, follower: taskIdentifier(follower), positions }, "inline handling failed; the records' jobs are queued as usual");
        continue;
      }
      const durationMs = performance.now() - started;
      for (const _ of positions) this.rt.onHandled?.({ task: taskIdentifier(follower), stream: follower.stream, concern: follower.concern, outcome: "completed", durationMs });
    }
  }

  /** The send, racing the worker's stop: when the shutdown grace is over, it is abandoned at once. */
  private async perform<TResult>(bot: ExternalBot<TDeps, TResult>, c: Claimed): Promise<TResult> {
    const signal = this.rt.stopping ?? new AbortController().signal;
    const send = bot.perform({
      record: c.record,
      attempt: c.state.attempts,
      deps: this.rt.deps,
      logger: this.loggerFor(c),
      signal,
      previousAttempt: await this.previousAttempt(c.state),
    });
    if (!this.rt.stopping) return send;
    return new Promise<TResult>((resolve, reject) => {
      const cut = () => reject(new CutShortError(c.record.position, c.record.stream));
      if (signal.aborted) return cut();
      signal.addEventListener("abort", cut, { once: true });
      send.then(resolve, reject).finally(() => signal.removeEventListener("abort", cut));
    });
  }

  /**
   * How the attempt before this claim ended. This claim's history entry says
   * what the record was before it: AvailableAfterExternalCancellation means
   * the previous attempt was cancelled while Running without an outcome
   * (claimAndLoad's "abandoned", or an operator's cancel). A first attempt
   * reads nothing.
   */
  private async previousAttempt(state: HandlingState): Promise<PreviousAttempt | null> {
    if (state.attempts <= 1) return null;
    const history = await this.inTransaction((tx) => getHistory(tx, this.bot.stream, state.position, this.bot.concern));
    const claimEntry = history.findLast((h) => h.action === "claim");
    return { abandoned: claimEntry?.fromStatus === "AvailableAfterExternalCancellation", lastError: state.lastError };
  }

  /**
   * Record what a send did. The send cannot be undone, so a passing database
   * failure here (connection lost, server restarting) is retried a few times
   * before giving the job back to graphile-worker, which would send again.
   * Engine errors (e.g. someone cancelled the record meanwhile) are not retried.
   */
  async afterSend<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.inTransaction(fn);
      } catch (error) {
        if (attempt >= AFTER_SEND_TRIES || error instanceof TidingsError) throw error;
        this.logger.warn({ err: error, attempt }, "recording the outcome of a send failed; retrying");
        await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt));
      }
    }
  }

  /**
   * Running → Failed with the error kept. If the failure is transient and
   * failed attempts remain (BOT_MAX_ATTEMPTS counts failures, not claims),
   * the runner resets it (Failed → AvailableAfterFailure) and queues the next
   * attempt after a backoff, from the database's clock (queueHandling): each
   * attempt stays visible in the handling history.
   */
  private async recordFailure(tx: Tx, c: Claimed, error: Error, record: StreamRecord | null): Promise<HandledOutcome> {
    const { transient, retryAfterMs } = classify(error);
    const attempt = c.state.attempts;
    const { maxAttempts, retryBaseMs, retryMaxMs } = this.rt.settings;
    const bot = this.bot;
    const target = { ...this.target, position: c.state.position };
    const logger = this.loggerFor(c);
    const externalDetails = error instanceof ExternalError ? { external: error.details } : {};
    const message = error.message || error.name;

    // The other side asked us to come back later (429 with Retry-After): that
    // is "try again later", not a failure, so it does not use up an attempt.
    if (transient && retryAfterMs !== undefined) {
      const deferrals = await countActions(tx, target, "self_cancel");
      if (deferrals < MAX_DEFERRALS) {
        const delay = Math.min(Math.max(retryAfterMs, 1), retryMaxMs);
        await this.selfCancel(tx, target.position, { reason: `asked to retry after ${delay} ms: ${message}`, retryInMs: delay, error: message, details: externalDetails, attempt });
        logger.info({ err: error, delay }, "deferred at the other side's request");
        return "deferred";
      }
    }

    const failures = (await countActions(tx, target, "fail")) + 1;
    // A channel's own schedule (email waits out greylisting), else backoff.
    const schedule = this.rt.settings.retrySchedules?.[bot.concern];
    const attemptsAllowed = schedule ? schedule.length + 1 : maxAttempts;
    const final = !transient || failures >= attemptsAllowed;
    const delay = final ? undefined : schedule ? jitter(schedule[failures - 1]!) : backoffMs(failures, retryBaseMs, retryMaxMs);
    if (bot.kind === "external" && bot.failed && record) {
      const now = await this.now(tx);
      await bot.failed({ ...this.context(tx, c, record, now), error, final, transient, ...(delay === undefined ? {} : { retryInMs: delay }) });
    }
    await transition(tx, target, "fail", {
      actor: bot.actor,
      attempt,
      reason: final ? `${transient ? "gave up after" : "permanent failure on"} attempt ${attempt}: ${message}` : `attempt ${attempt} failed: ${message}`,
      error: message,
      details: { attempt, failures, transient, ...externalDetails },
    });
    if (final) {
      logger.warn({ err: error, attempt }, "handling failed");
      return "failed";
    }
    await transition(tx, target, "reset_failed", {
      actor: "runner",
      reason: `transient failure; attempt ${failures + 1} of ${attemptsAllowed} in ${formatDelay(delay!)}`,
      details: { retryInMs: delay },
    });
    await queueHandling(tx, bot.stream, bot.concern, [target.position], delay);
    logger.info({ err: error, attempt, delay }, "attempt failed; retry scheduled");
    return "retrying";
  }
}
