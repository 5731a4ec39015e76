import type { JobHelpers, Task } from "graphile-worker";
import { ZodError } from "zod";
import { databaseNow, inTransaction, type Tx } from "../db/database";
import { ExternalError, ForbiddenError, NotFoundError, TidingsError, ValidationError, coerceError } from "../errors/errors";
import { AppendBuffer } from "../streams/append";
import { claim, claimManyWithRecords, completeMany, countActions, getHistory, queueHandling, transition } from "../streams/handling";
import type { HandlingState, StreamRecord } from "../streams/interfaces";
import { getByPosition } from "../streams/read";
import { BatchQueue, runTransactionalBatch, type BatchItem } from "./batch";
import { taskIdentifier, type Bot, type HandledOutcome, type BotRuntime, type ExternalBot, type HandlerContext, type PreviousAttempt, type TransactionalBot } from "./bot";

/** What the outbox trigger (and queue_handling) put in each job: a pointer, not a copy. */
interface JobPayload {
  stream: string;
  position: number;
}

function parseJobPayload(payload: unknown, bot: Bot<unknown>): JobPayload {
  const p = payload as Partial<JobPayload> | null;
  if (!p || p.stream !== bot.stream || typeof p.position !== "number" || !Number.isSafeInteger(p.position)) {
    throw new ValidationError(`job payload ${JSON.stringify(payload)} is not a record of ${bot.stream}`);
  }
  return { stream: p.stream, position: p.position };
}

/**
 * A batch of an external bot (email, Slack): one transaction claims the
 * records and runs `prepare` for all, the sends go out concurrently with no
 * transaction open, and one transaction records every success. Failed sends
 * are recorded one by one (they need the retry rules); if a batched
 * transaction fails, each record falls back to its own.
 */
async function runExternalBatch<TDeps, TResult>(
  bot: ExternalBot<TDeps, TResult>,
  rt: BotRuntime<TDeps>,
  items: BatchItem[],
): Promise<{ done: Set<BatchItem> }> {
  const done = new Set<BatchItem>();
  const byPosition = new Map<number, BatchItem>();
  for (const item of items) if (!byPosition.has(item.position)) byPosition.set(item.position, item);
  const target = { stream: bot.stream, concern: bot.concern };

  // Phase 1: claim and prepare, together. If it fails nothing was claimed.
  const claimed = await inTransaction(rt.db, bot.actor, async (tx) => {
    const appends = new AppendBuffer();
    const claimedRecords = await claimManyWithRecords(tx, target, [...byPosition.values()].map((i) => ({ position: i.position, claimedBy: i.jobTag })), bot.actor);
    const out: Array<{ run: BotRun<TDeps>; state: HandlingState; record: StreamRecord; item: BatchItem }> = [];
    for (const { state, record: raw } of claimedRecords) {
      const item = byPosition.get(raw.position)!;
      const run = new BotRun(bot, rt, raw.position, item.jobTag, undefined);
      const schema = bot.schemas?.[raw.type];
      if (bot.schemas && !schema) throw new ValidationError(`${bot.concern} does not handle records of type ${raw.type}`);
      const record = schema ? { ...raw, payload: schema.parse(raw.payload) } : raw;
      await bot.prepare?.({ ...run.contextFor(tx, record, state.attempts), out: appends });
      out.push({ run, state, record, item });
    }
    await appends.flush(tx);
    return out;
  });

  // Phase 2: the sends.
  const settled = await Promise.all(
    claimed.map(async (c) => {
      try {
        return { ...c, ok: true as const, result: await c.run.perform(bot, c.state, c.record) };
      } catch (thrown) {
        return { ...c, ok: false as const, error: coerceError(thrown) };
      }
    }),
  );

  // Phase 3: successes in one transaction; failures one by one.
  const successes = settled.filter((s) => s.ok);
  try {
    await inTransaction(rt.db, bot.actor, async (tx) => {
      const appends = new AppendBuffer();
      for (const s of successes) await s.run.recordSuccess(tx, bot, s.state, s.record, s.result as TResult, false, appends);
      await appends.flush(tx);
      await completeMany(tx, target, successes.map((s) => s.state.position), bot.actor);
    });
  } catch {
    for (const s of successes) await s.run.recordSendSuccess(bot, s.state, s.record, s.result as TResult);
  }
  for (const s of settled) if (!s.ok) await s.run.recordSendFailure(s.error, s.state, s.record);
  for (const c of claimed) done.add(c.item);
  for (const item of items) if (!done.has(item) && done.has(byPosition.get(item.position)!)) done.add(item);
  return { done };
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
export function formatDelay(ms: number): string {
  if (ms < 1_000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 1_000)} s`;
  if (ms < 7_200_000) return `${Math.round(ms / 60_000)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

/** Transient failures are retried with backoff; permanent ones fail the record now. */
export function classify(error: Error): { transient: boolean; retryAfterMs?: number } {
  if (error instanceof ExternalError) return { transient: error.transient, retryAfterMs: error.retryAfterMs };
  if (
    error instanceof ValidationError ||
    error instanceof ZodError ||
    error instanceof NotFoundError ||
    error instanceof ForbiddenError
  ) {
    return { transient: false };
  }
  // Anything else (a lost database connection, a bug) may pass: retry, bounded by maxAttempts.
  return { transient: true };
}

/** Turn a bot into a graphile-worker task. */
export function createTask<TDeps>(bot: Bot<TDeps>, rt: BotRuntime<TDeps>): Task {
  const batches = !bot.batch
    ? null
    : bot.kind === "transactional"
      ? new BatchQueue(bot.batch.maxSize, BATCHES_IN_PARALLEL, (items) => runTransactionalBatch(bot, rt, items))
      : new BatchQueue(bot.batch.maxSize, SEND_BATCHES_IN_PARALLEL, (items) => runExternalBatch(bot, rt, items));
  return async (rawPayload: unknown, helpers: JobHelpers) => {
    const { position } = parseJobPayload(rawPayload, bot as Bot<unknown>);
    const jobTag = `job ${helpers.job.id}`;
    const run = new BotRun(bot, rt, position, jobTag, helpers.abortSignal);
    const started = performance.now();
    try {
      if (batches && (await batches.submit({ position, jobTag }))) run.outcome = "completed";
      else await (bot.kind === "transactional" ? run.transactional(bot) : run.external(bot));
    } finally {
      rt.onHandled?.({
        task: taskIdentifier(bot),
        stream: bot.stream,
        concern: bot.concern,
        outcome: run.outcome,
        durationMs: performance.now() - started,
      });
    }
  };
}

class BotRun<TDeps> {
  /** How this run ended, for metrics ("error" until it records an outcome). */
  outcome: HandledOutcome = "error";
  private readonly target: { stream: string; position: number; concern: string };
  private readonly logger;

  constructor(
    private readonly bot: Bot<TDeps>,
    private readonly rt: BotRuntime<TDeps>,
    position: number,
    private readonly jobTag: string,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.target = { stream: bot.stream, position, concern: bot.concern };
    this.logger = rt.logger.child({ task: taskIdentifier(bot), position, job: jobTag });
  }

  private now(): Date {
    return this.rt.clock?.() ?? new Date();
  }

  private async transactionAsBot<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    return inTransaction(this.rt.db, this.bot.actor, fn);
  }

  /**
   * Claim for this job. A record left Running by this same job means an
   * earlier run of it died (worker killed, connection lost) before recording
   * an outcome: cancel that attempt, with the reason, and claim again.
   */
  private async claimForJob(tx: Tx): Promise<HandlingState | null> {
    const by = { actor: this.bot.actor, claimedBy: this.jobTag, reason: `claimed by ${this.jobTag}` };
    let result = await claim(tx, this.target, by);
    if (!result.claimed && result.state.status === "Running" && result.state.claimedBy === this.jobTag) {
      await transition(tx, this.target, "cancel", {
        actor: "runner",
        reason: `attempt ${result.state.attempts} by ${this.jobTag} was abandoned before recording an outcome; handling again`,
      });
      result = await claim(tx, this.target, by);
    }
    if (!result.claimed) {
      this.outcome = "skipped";
      this.logger.debug({ why: result.why }, "nothing to do");
      return null;
    }
    return result.state;
  }

  private async loadRecord(tx: Tx): Promise<StreamRecord> {
    const record = await getByPosition(tx, this.bot.stream, this.target.position);
    if (!record) throw new NotFoundError(`stream ${this.bot.stream} has no record at position ${this.target.position}`);
    const schema = this.bot.schemas?.[record.type];
    if (this.bot.schemas && !schema) {
      throw new ValidationError(`${this.bot.concern} does not handle records of type ${record.type}`);
    }
    return schema ? { ...record, payload: schema.parse(record.payload) } : record;
  }

  contextFor(tx: Tx, record: StreamRecord, attempt: number): HandlerContext<TDeps> {
    return this.context(tx, record, attempt);
  }

  private context(tx: Tx, record: StreamRecord, attempt: number): HandlerContext<TDeps> {
    return { tx, record, attempt, deps: this.rt.deps, logger: this.logger, now: this.now() };
  }

  private async selfCancel(tx: Tx, retryAfterMs: number, reason: string): Promise<void> {
    await transition(tx, this.target, "self_cancel", { actor: this.bot.actor, reason, details: { retryInMs: retryAfterMs } });
    await queueHandling(tx, this.bot.stream, this.bot.concern, [this.target.position], retryAfterMs);
  }

  async transactional(bot: TransactionalBot<TDeps>): Promise<void> {
    try {
      await this.transactionAsBot(async (tx) => {
        const state = await this.claimForJob(tx);
        if (!state) return;
        const record = await this.loadRecord(tx);
        // Deadlines are the database's time, whatever this process's clock says.
        const now = this.rt.clock?.() ?? (await databaseNow(tx));
        const outcome = await bot.handle({ ...this.context(tx, record, state.attempts), now });
        if (outcome) await this.selfCancel(tx, outcome.retryAfterMs, outcome.reason);
        else await transition(tx, this.target, "complete", { actor: bot.actor });
        this.outcome = outcome ? "self_cancelled" : "completed";
      });
    } catch (thrown) {
      // The handler's transaction rolled back, claim included: claim again so
      // the failed attempt is counted and recorded.
      const error = coerceError(thrown);
      await this.transactionAsBot(async (tx) => {
        const state = await this.claimForJob(tx);
        if (!state) return;
        await this.recordFailure(tx, error, state, null);
      });
    }
  }

  async external<TResult>(bot: ExternalBot<TDeps, TResult>): Promise<void> {
    let claimed: { state: HandlingState; record: StreamRecord } | null = null;
    try {
      claimed = await this.transactionAsBot(async (tx) => {
        const state = await this.claimForJob(tx);
        if (!state) return null;
        const record = await this.loadRecord(tx);
        await bot.prepare?.(this.context(tx, record, state.attempts));
        return { state, record };
      });
    } catch (thrown) {
      const error = coerceError(thrown);
      await this.transactionAsBot(async (tx) => {
        const state = await this.claimForJob(tx);
        if (state) await this.recordFailure(tx, error, state, null);
      });
      return;
    }
    if (!claimed) return;
    await this.sendAndRecord(bot, claimed.state, claimed.record);
  }

  /** Send, then record the outcome (its own transaction). */
  async sendAndRecord<TResult>(bot: ExternalBot<TDeps, TResult>, state: HandlingState, record: StreamRecord): Promise<void> {
    let result: TResult;
    try {
      result = await this.perform(bot, state, record);
    } catch (thrown) {
      await this.recordSendFailure(coerceError(thrown), state, record);
      return;
    }
    await this.recordSendSuccess(bot, state, record, result);
  }

  async perform<TResult>(bot: ExternalBot<TDeps, TResult>, state: HandlingState, record: StreamRecord): Promise<TResult> {
    return bot.perform({
      record,
      attempt: state.attempts,
      deps: this.rt.deps,
      logger: this.logger,
      signal: this.signal ?? new AbortController().signal,
      previousAttempt: await this.previousAttempt(state),
    });
  }

  /**
   * How the attempt before this claim ended. This claim's history entry says
   * what the record was before it: AvailableAfterExternalCancellation means
   * the previous attempt was cancelled while Running without an outcome
   * (claimForJob's "abandoned", or an operator's cancel). A first attempt
   * reads nothing.
   */
  private async previousAttempt(state: HandlingState): Promise<PreviousAttempt | null> {
    if (state.attempts <= 1) return null;
    const history = await this.transactionAsBot((tx) => getHistory(tx, this.bot.stream, this.target.position, this.bot.concern));
    const claim = history.findLast((h) => h.action === "claim");
    return { abandoned: claim?.fromStatus === "AvailableAfterExternalCancellation", lastError: state.lastError };
  }

  async recordSendFailure(error: Error, state: HandlingState, record: StreamRecord): Promise<void> {
    await this.afterSend((tx) => this.recordFailure(tx, error, state, record));
  }

  async recordSendSuccess<TResult>(bot: ExternalBot<TDeps, TResult>, state: HandlingState, record: StreamRecord, result: TResult): Promise<void> {
    await this.afterSend((tx) => this.recordSuccess(tx, bot, state, record, result));
    this.outcome = "completed";
  }

  /** The success of a send: the bot's events, then Running → Completed (set-based when batched). */
  async recordSuccess<TResult>(
    tx: Tx,
    bot: ExternalBot<TDeps, TResult>,
    state: HandlingState,
    record: StreamRecord,
    result: TResult,
    complete = true,
    out?: AppendBuffer,
  ): Promise<void> {
    await bot.succeeded({ ...this.context(tx, record, state.attempts), result, ...(out ? { out } : {}) });
    if (complete) await transition(tx, this.target, "complete", { actor: bot.actor });
  }

  /**
   * Record what a send did. The send cannot be undone, so a passing database
   * failure here (connection lost, server restarting) is retried a few times
   * before giving the job back to graphile-worker, which would send again.
   * Engine errors (e.g. someone cancelled the record meanwhile) are not retried.
   */
  private async afterSend(fn: (tx: Tx) => Promise<void>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.transactionAsBot(fn);
        return;
      } catch (error) {
        if (attempt >= AFTER_SEND_TRIES || error instanceof TidingsError) throw error;
        this.logger.warn({ err: error, attempt }, "recording the outcome of a send failed; retrying");
        await new Promise((resolve) => setTimeout(resolve, 100 * 2 ** attempt));
      }
    }
  }

  /**
   * Running → Failed with the error kept. If the failure is transient and
   * failed attempts remain (BOT_MAX_ATTEMPTS counts failures, not claims), the runner resets it (Failed → AvailableAfterFailure) and
   * queues the next attempt after a backoff: each attempt stays visible in the
   * handling history.
   */
  private async recordFailure(tx: Tx, error: Error, state: HandlingState, record: StreamRecord | null): Promise<void> {
    const { transient, retryAfterMs } = classify(error);
    const attempt = state.attempts;
    const { maxAttempts, retryBaseMs, retryMaxMs } = this.rt.settings;
    const bot = this.bot;
    const externalDetails = error instanceof ExternalError ? { external: error.details } : {};
    const message = error.message || error.name;

    // The other side asked us to come back later (429 with Retry-After): that
    // is "try again later", not a failure, so it does not use up an attempt.
    if (transient && retryAfterMs !== undefined) {
      const deferrals = await countActions(tx, this.target, "self_cancel");
      if (deferrals < MAX_DEFERRALS) {
        const delay = Math.min(Math.max(retryAfterMs, 1), retryMaxMs);
        await transition(tx, this.target, "self_cancel", {
          actor: bot.actor,
          reason: `asked to retry after ${delay} ms: ${message}`,
          error: message,
          details: { retryInMs: delay, ...externalDetails },
        });
        await queueHandling(tx, bot.stream, bot.concern, [this.target.position], delay);
        this.outcome = "deferred";
        this.logger.info({ err: error, delay }, "deferred at the other side's request");
        return;
      }
    }

    const failures = (await countActions(tx, this.target, "fail")) + 1;
    // A channel's own schedule (email waits out greylisting), else backoff.
    const schedule = this.rt.settings.retrySchedules?.[bot.concern];
    const attemptsAllowed = schedule ? schedule.length + 1 : maxAttempts;
    const final = !transient || failures >= attemptsAllowed;
    const delay = final ? undefined : schedule ? jitter(schedule[failures - 1]!) : backoffMs(failures, retryBaseMs, retryMaxMs);
    if (bot.kind === "external" && bot.failed && record) {
      await bot.failed({ ...this.context(tx, record, attempt), error, final, transient, ...(delay === undefined ? {} : { retryInMs: delay }) });
    }
    await transition(tx, this.target, "fail", {
      actor: bot.actor,
      reason: final
        ? `${transient ? "gave up after" : "permanent failure on"} attempt ${attempt}: ${message}`
        : `attempt ${attempt} failed: ${message}`,
      error: message,
      details: { attempt, failures, transient, ...externalDetails },
    });
    if (final) {
      this.outcome = "failed";
      this.logger.warn({ err: error, attempt }, "handling failed");
      return;
    }
    await transition(tx, this.target, "reset_failed", {
      actor: "runner",
      reason: `transient failure; attempt ${failures + 1} of ${attemptsAllowed} in ${formatDelay(delay!)}`,
      details: { retryInMs: delay },
    });
    await queueHandling(tx, bot.stream, bot.concern, [this.target.position], delay);
    this.outcome = "retrying";
    this.logger.info({ err: error, attempt, delay }, "attempt failed; retry scheduled");
  }
}
