import type { ZodType } from "zod";
import type { Db, Tx } from "../db/database";
import type { Logger } from "../logging/logger";
import type { AppendBuffer } from "../streams/append";
import type { StreamRecord } from "../streams/interfaces";

/**
 * A bot handles the records of one stream for one concern. The runner
 * (runner.ts) turns it into a graphile-worker task: claim, handle, record
 * the outcome; a job is a batch of one. Two shapes:
 *
 * - `transactional`: the handler only reads and appends; claim, handler and
 *   completion commit together, so a crash leaves nothing half-done.
 * - `external`: the handler talks to the outside world (SMTP, Slack). The
 *   claim commits first (the record is visibly Running), `perform` runs with
 *   no transaction open, and its outcome commits with the completion. A crash
 *   between the send and the outcome can repeat one send; see docs.
 */
export interface BotBase {
  /** The stream this bot consumes. */
  stream: string;
  /** The concern it handles the stream for (as declared in migrations). */
  concern: string;
  /** The actor (PostgreSQL role tidings_<actor>) its transactions run as. */
  actor: string;
  /** Payload schemas by record type: payloads are parsed before the handler sees them. */
  schemas?: Record<string, ZodType>;
}

/**
 * The identity of a transactional bot that handles a stream as its own actor
 * (concern and actor share the name, as migrations declare them), in
 * batches of up to 64 by default.
 */
export function transactionalConsumer(stream: string, actor: string, batch: TransactionalBot<unknown>["batch"] = { maxSize: 64 }) {
  return { kind: "transactional" as const, stream, concern: actor, actor, batch };
}

export interface HandlerContext<TDeps> {
  tx: Tx;
  record: StreamRecord;
  /** 1 for the first attempt. */
  attempt: number;
  deps: TDeps;
  logger: Logger;
  now: Date;
  /**
   * Set when the record is handled in a batch: appends made through
   * `appendFor` are collected here and written together (one per stream)
   * before the batch's transaction commits.
   */
  out?: AppendBuffer;
}

/** A handler may ask to be tried again later ("self-cancel") instead of completing. */
export type HandlerOutcome = void | { retryAfterMs: number; reason: string };

export interface TransactionalBot<TDeps> extends BotBase {
  kind: "transactional";
  handle(ctx: HandlerContext<TDeps>): Promise<HandlerOutcome>;
  /**
   * Handle the jobs that arrive together in one transaction (up to maxSize):
   * one claim, one completion and one commit for the lot instead of per
   * record. If any handler throws, the batch is rolled back and each record
   * is handled on its own, so one bad record cannot hold the others back.
   * With `coalesceById`, only the newest record of each id in the batch is
   * handed to `handle` (the others complete with it): for handlers that
   * refresh something per id, such as a view or a saga's evaluation.
   */
  batch?: { maxSize: number; coalesceById?: boolean };
  /**
   * Handle a whole batch at once (set-based: a few queries for any number of
   * records) instead of calling handle() per record. The batch's records
   * complete together; a bot that may self-cancel a record keeps to handle().
   */
  handleBatch?(ctx: BatchHandlerContext<TDeps>): Promise<void>;
  /**
   * Also handle these record types in the transaction that records a send's
   * success on this bot's stream (an external bot of the same worker
   * process appending them): the same claim, handleBatch and completion, as
   * this bot's own actor, inside a savepoint, with no job, no fetch and no
   * commit of their own. A record handled so gets no job (the outbox skips
   * records completed for a concern in their own transaction); if the
   * inline handling fails, it rolls back alone and the record's job is
   * queued as usual. The types must be among those the consumer is declared
   * for in SQL. For followers whose work is short and whose delay matters:
   * a saga waiting for the outcome of a send.
   */
  followsInline?: { recordTypes: readonly string[] };
}

export interface BatchHandlerContext<TDeps> {
  tx: Tx;
  /** Ordered by id, then position (after coalescing, one per id). */
  records: StreamRecord[];
  deps: TDeps;
  logger: Logger;
  now: Date;
  /**
   * Appends collected here are written by the runner after the handler, in
   * the same transaction, and the runner sees what was written (records of
   * bots that send inline are claimed there: ExternalBot.sendsInline).
   */
  out?: AppendBuffer;
}

export interface PerformContext<TDeps> {
  record: StreamRecord;
  attempt: number;
  deps: TDeps;
  logger: Logger;
  signal: AbortSignal;
  /**
   * How the attempt before this one ended, null on a first attempt: whether
   * it was abandoned while Running (its worker died or was cut off before
   * recording an outcome, so its side effect may have happened), and the
   * record's last recorded error. A bot whose side effect must not repeat
   * checks for it first.
   */
  previousAttempt?: PreviousAttempt | null;
}

export interface PreviousAttempt {
  abandoned: boolean;
  lastError: string | null;
}

export interface ExternalBot<TDeps, TResult> extends BotBase {
  kind: "external";
  /**
   * Runs in the claim transaction (e.g. append a "requested" event). It may
   * answer "not yet" (`{ retryAfterMs, reason }`, as handle() may): the
   * record is not sent now and is handled again after that time, which is no
   * failed attempt.
   */
  prepare?(ctx: HandlerContext<TDeps>): Promise<HandlerOutcome>;
  /**
   * Claim and prepare the jobs that arrive together in one transaction, send
   * them concurrently, and record the successes in one transaction (see
   * the external pipeline in runner.ts).
   */
  batch?: { maxSize: number };
  /**
   * When a transactional bot of the same worker process appends records of
   * this bot's stream, claim them (and run `prepare`) in that transaction, as
   * this bot's actor, and send them as soon as it commits: no job, no fetch
   * and no claim transaction of their own, one queue hop fewer. The claim
   * names the process (`inline:<process id>`); if the process dies before
   * recording an outcome, another one takes the record over once the
   * process has stopped heart-beating for a lease, and the process itself
   * hands over a claim it could not record (recoverInlineClaims in
   * src/bots/inline.ts). Only appends made through the runner's buffer
   * (`out` of the handler's context) are claimed so; the others, and a
   * claim that fails (it rolls back alone), get their jobs as usual.
   */
  sendsInline?: boolean;
  /** The side effect, outside any transaction. Throw ExternalError to classify a failure. */
  perform(ctx: PerformContext<TDeps>): Promise<TResult>;
  /** Runs in the completion transaction with perform's result. */
  succeeded(ctx: HandlerContext<TDeps> & { result: TResult }): Promise<void>;
  /** Runs in the failure transaction; `final` when no retry follows, else `retryInMs` until the next attempt. */
  failed?(ctx: HandlerContext<TDeps> & { error: Error; final: boolean; transient: boolean; retryInMs?: number }): Promise<void>;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a list of bots mixes external bots of every result type
export type Bot<TDeps> = TransactionalBot<TDeps> | ExternalBot<TDeps, any>;

export interface CatchUpContext<TDeps> {
  tx: Tx;
  /** Records committed after the checkpoint, each stream's in commit order. */
  records: StreamRecord[];
  deps: TDeps;
  logger: Logger;
  now: Date;
}

/**
 * A consumer that follows streams from a checkpoint (tidings.checkpoints)
 * instead of one job per record: for derived data such as views, where one
 * refresh can stand for many records. One process at a time runs it (an
 * advisory lock); each batch and the checkpoint move commit together.
 */
export interface CatchUpBot<TDeps> {
  kind: "catch-up";
  /** Its row in tidings.checkpoints. */
  checkpoint: string;
  concern: string;
  actor: string;
  streams: readonly string[];
  /** Records read per stream per batch. */
  batchSize: number;
  handleBatch(ctx: CatchUpContext<TDeps>): Promise<void>;
}

/** Whatever a worker process runs: job-driven bots and catch-up bots. */
export type AnyBot<TDeps> = Bot<TDeps> | CatchUpBot<TDeps>;

export function taskIdentifier(bot: Pick<BotBase, "stream" | "concern">): string {
  return `${bot.stream}:${bot.concern}`;
}

export interface RunnerSettings {
  maxAttempts: number;
  retryBaseMs: number;
  retryMaxMs: number;
  /**
   * A retry schedule per concern (e.g. email_bot): the delays before each
   * further attempt after a transient failure, so attempts = delays + 1.
   * Concerns without one retry maxAttempts times with exponential backoff.
   */
  retrySchedules?: Partial<Record<string, readonly number[]>>;
}

/** How one job's run ended ("in_doubt": its send was cut short by shutdown, nothing recorded). */
export type HandledOutcome = "completed" | "self_cancelled" | "deferred" | "retrying" | "failed" | "skipped" | "in_doubt" | "error";

export interface HandledInfo {
  task: string;
  stream: string;
  concern: string;
  outcome: HandledOutcome;
  durationMs: number;
}

export interface BotRuntime<TDeps> {
  db: Db;
  deps: TDeps;
  logger: Logger;
  settings: RunnerSettings;
  /** The time handlers see; the database's clock when absent. */
  clock?: () => Date;
  /**
   * Aborted when the worker stops waiting for sends in flight (its shutdown
   * grace is over): they are abandoned and record nothing, so each stays
   * Running, in doubt, for the next claim to account for.
   */
  stopping?: AbortSignal;
  /** Called after every job (metrics hook). */
  onHandled?: (info: HandledInfo) => void;
  /**
   * The worker process (tidings.worker_heartbeats.process_id) and its sends
   * in flight: set by startWorker, which enables inline sends
   * (ExternalBot.sendsInline). Without it every record waits for its job.
   */
  inline?: InlineSends;
}

/**
 * The records a worker process sends inline, by stream and concern: reserved
 * before the claiming transaction commits (so neither the bound nor the
 * hand-over of claims, src/bots/inline.ts, can miss them), held until their
 * outcomes are recorded.
 */
export interface InlineSends {
  processId: string;
  /** Count these records as this process's from now on (the same record may be held twice). */
  reserve(stream: string, concern: string, positions: readonly number[]): InlineReservation;
  /** Whether this process holds this record. */
  isSending(stream: string, concern: string, position: number): boolean;
  /** How many records of this stream this process holds for the concern. */
  count(stream: string, concern: string): number;
  /** Settles when every reservation has been released. */
  settled(): Promise<void>;
}

export interface InlineReservation {
  /** Release now (the claiming transaction rolled back). */
  release(): void;
  /** Release when this settles (the sends and their recording). */
  until(sending: Promise<unknown>): void;
}
