import { EventEmitter, setMaxListeners } from "node:events";
import { randomUUID } from "node:crypto";
import os from "node:os";
import { Logger as WorkerLogger, run, type Runner, type TaskList, type WorkerEvents } from "graphile-worker";
import { sql } from "kysely";
import pg from "pg";
import { createDb, type Db } from "../db/database";
import type { Logger } from "../logging/logger";
import { createTask, inlineFollowersOf, inlineSendersOf, isInlineSender } from "./runner";
import { createInlineSends, recoverInlineClaims } from "./inline";
import { taskIdentifier, type AnyBot, type BotRuntime, type CatchUpBot, type ExternalBot } from "./bot";
import { startCatchUp } from "./catchUp";
import { sweepHandling } from "../streams/handling";

export interface WorkerSettings {
  concurrency: number;
  pollIntervalMs: number;
  /**
   * A worker process that has not proved alive for this long is presumed
   * dead and the jobs it held are unlocked for others. graphile-worker alone
   * waits 4 hours. Heartbeats come every leaseMs/3, so only a process stalled
   * for a whole lease (or dead) loses its jobs.
   */
  leaseMs: number;
  /** How often an idle catch-up bot (the projection) looks for new records; default 100 ms. */
  catchUpIdleMs?: number;
  /** How often the handling sweep looks for records whose job went missing (tidings.sweep_handling); default 30 s. */
  sweepMs?: number;
  /**
   * How long stop() lets jobs in flight finish (WORKER_SHUTDOWN_GRACE_MS);
   * default 7 s, so the whole process stops within the 10 s Docker gives.
   * Sends still going then are cut short and left Running, in doubt.
   */
  shutdownGraceMs?: number;
}

/** Default of WorkerSettings.shutdownGraceMs. */
const DEFAULT_SHUTDOWN_GRACE_MS = 7_000;
/**
 * After the grace, how long stop() waits for the cut-short jobs to be handed
 * back to graphile-worker (one query) before it returns anyway: a job still
 * locked then comes back through the lease.
 */
const HAND_BACK_MS = 1_000;

export interface TidingsWorker {
  processId: string;
  runner: Runner;
  /** Say the process is going down (call at once on a signal): connection errors from now on are expected. */
  markShuttingDown(): void;
  /**
   * Stop taking jobs, let those in flight finish within the shutdown grace,
   * then cut short the sends still going (left Running, in doubt: their jobs
   * fail back to the queue, or the lease hands them over).
   */
  stop(): Promise<void>;
}

/**
 * graphile-worker warns at every start when the pool is smaller than the
 * concurrency, assuming each running job holds a connection. Here a job
 * waits, holding none, for its bot's next batch (src/bots/runner.ts: one
 * transaction per batch, a few batches per bot at once), so DB_POOL_SIZE
 * below WORKER_CONCURRENCY is the design, and the warning is logged at debug.
 */
const POOL_SMALLER_THAN_CONCURRENCY = "WARNING: having maxPoolSize";
/** graphile-worker's local queue logs this (and carries on) each time a fetch of jobs fails. */
const FETCH_FAILED = "Error occurred fetching jobs";
/**
 * Consecutive failed fetches after which a pool is replaced. graphile-worker
 * caches the lookup of its task ids once per pool, failure included: a pool
 * that started while connections were being cut can fail every fetch forever
 * without shutting down. A fresh pool looks the ids up again.
 */
const FETCH_FAILURES_BEFORE_RESTART = 10;

function adaptLogger(logger: Logger, onFetchFailed: () => void, shuttingDown: () => boolean): WorkerLogger {
  return new WorkerLogger((scope) => {
    // A child logger costs a serialisation of its bindings (with redaction):
    // made once per scope, and only for a line that will be written
    // (graphile-worker logs every job at debug).
    let child: Logger | undefined;
    const scoped = () => (child ??= logger.child({ component: "graphile-worker", ...scope }));
    return (level, message, meta) => {
      if (level === "error" && message.startsWith(FETCH_FAILED)) onFetchFailed();
      // Connections cut while the process stops (its embedded PostgreSQL stops on
      // the same signal) are expected then, not errors.
      if (level === "error" && shuttingDown()) scoped().info(meta ?? {}, `${message} (while shutting down)`);
      else if (level === "error") scoped().error(meta ?? {}, message);
      else if (level === "warning" && !message.startsWith(POOL_SMALLER_THAN_CONCURRENCY)) scoped().warn(meta ?? {}, message);
      else if (logger.isLevelEnabled("debug")) scoped().debug(meta ?? {}, message);
    };
  });
}

/**
 * Jobs that are not a bot's: maintenance (src/maintenance), run by
 * graphile-worker's cron in every worker process (a cron job fires once per
 * schedule whatever the number of processes: graphile-worker's job key).
 */
export interface ScheduledTasks {
  taskList: TaskList;
  /** graphile-worker crontab lines naming tasks of taskList. */
  crontab: string;
}

/** Start graphile-worker with one task per bot, plus the heartbeat that lets dead workers' jobs be recovered. */
export async function startWorker<TDeps>(options: {
  pool: pg.Pool;
  db: Db;
  bots: readonly AnyBot<TDeps>[];
  runtime: BotRuntime<TDeps>;
  settings: WorkerSettings;
  logger: Logger;
  scheduled?: ScheduledTasks;
}): Promise<TidingsWorker> {
  const { pool, db, bots, settings, logger } = options;
  const graceMs = settings.shutdownGraceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
  const cutOff = new AbortController();
  // Every send in flight listens for the cut (runner.ts perform, and the
  // senders' own clients), and removes its listener when it ends: hundreds at
  // once (inline sends) are the design, not a leak Node should warn about.
  setMaxListeners(0, cutOff.signal);
  const processId = randomUUID();
  const inline = createInlineSends(processId);
  const runtime: BotRuntime<TDeps> = { ...options.runtime, stopping: cutOff.signal, inline };
  const taskList: TaskList = { ...options.scheduled?.taskList };
  const catchUps: CatchUpBot<TDeps>[] = [];
  for (const bot of bots) {
    if (bot.kind === "catch-up") catchUps.push(bot);
    else taskList[taskIdentifier(bot)] = createTask(bot, runtime, inlineFollowersOf(bot, bots), inlineSendersOf(bot, bots));
  }
  const inlineSenders = bots.filter(isInlineSender) as ExternalBot<unknown, unknown>[];

  // The pool ids of the running pool: the heartbeat vouches for these only,
  // so the jobs of a pool that gave up are recovered after the lease.
  let poolIds = new Set<string>();
  const events: WorkerEvents = new EventEmitter() as WorkerEvents;
  events.on("pool:create", ({ workerPool }) => poolIds.add(workerPool.id));
  let fetchFailures = 0;
  events.on("localQueue:getJobs:complete", () => {
    fetchFailures = 0;
  });
  const onFetchFailed = () => {
    fetchFailures += 1;
    if (fetchFailures === FETCH_FAILURES_BEFORE_RESTART) {
      const stuck = runner;
      logger.error({ failures: fetchFailures }, "worker pool keeps failing to fetch jobs; replacing it");
      // Stopping it settles its promise, and supervise() starts a new pool.
      void stuck.stop().catch((error: unknown) => logger.warn({ err: error }, "stopping a stuck worker pool failed"));
    }
  };

  // The heartbeat has a connection of its own: a live process whose pool is
  // busy (a flood of sends recording their outcomes) must not look dead to
  // the others, which would hand its work over while it is still doing it
  // (seen in the four-workers fault test with inline sends: heartbeats late
  // by over the 2 s lease, queued behind the recordings).
  const pulsePool = new pg.Pool({ ...pool.options, max: 1 });
  pulsePool.on("error", () => {});
  pulsePool.on("connect", (client) => client.on("error", () => {}));
  const pulseDb = createDb(pulsePool);
  const pulse = async () => {
    // An upsert: after a long outage another process may have swept our row.
    await pulseDb
      .insertInto("tidings.worker_heartbeats")
      .values({ process_id: processId, worker_ids: [...poolIds], hostname: os.hostname(), pid: process.pid })
      .onConflict((oc) => oc.column("process_id").doUpdateSet({ worker_ids: [...poolIds], heartbeat_at: sql`now()` }))
      .execute();
  };
  // The row exists before the pool takes any job or the bots claim anything inline.
  await pulse();

  const startRunner = () => {
    poolIds = new Set<string>();
    fetchFailures = 0;
    return run({
      pgPool: pool,
      taskList,
      concurrency: settings.concurrency,
      pollInterval: settings.pollIntervalMs,
      ...(options.scheduled ? { crontab: options.scheduled.crontab } : {}),
      noHandleSignals: true,
      logger: adaptLogger(logger, onFetchFailed, () => stopped || shuttingDown),
      events,
      preset: {
        worker: {
          // Fetch jobs in batches and complete them in batches: about 10× the
          // jobs per second of one-at-a-time on a 2-core machine.
          localQueue: { size: Math.max(settings.concurrency * 2, 10) },
          completeJobBatchDelay: 0,
          failJobBatchDelay: 0,
          // Its own abort of jobs at shutdown, aligned with ours (the runner heeds `stopping`).
          gracefulShutdownAbortTimeout: graceMs,
        },
      },
    });
  };

  let stopped = false;
  let shuttingDown = false;
  let runner: Runner = await startRunner();
  // A pool replaced for failing to fetch is already stopping: stopping it again is not an error.
  const stopQuietly = async (r: Runner) => {
    await r.stop().catch((error: unknown) => {
      if (!/already stopped/i.test(String(error))) throw error;
    });
  };

  // graphile-worker's pool shuts itself down after database errors it cannot
  // absorb (a restarted server, terminated connections: e.g. it could not
  // record a job's completion). A worker process must not live on without a
  // pool, heart-beating for jobs nobody runs: as soon as the pool starts
  // shutting down on its own, start a new one (pausing longer while the
  // database is still away). The old pool's ids leave the heartbeat, so the
  // jobs it still holds come back through the lease (recoverAbandonedJobs).
  let restarting = false;
  const restart = async (why: unknown) => {
    if (stopped || restarting) return;
    restarting = true;
    logger.error({ err: why }, "worker pool stopped on its own; starting a new one");
    try {
      for (let attempt = 1; !stopped; attempt++) {
        await new Promise((resolve) => setTimeout(resolve, Math.min(30_000, 250 * 2 ** attempt)));
        if (stopped) return;
        try {
          runner = await startRunner();
          // stop() may have come while the pool was starting: it stopped the old one.
          if (stopped) return await stopQuietly(runner);
          supervise(runner);
          logger.warn({ attempt }, "worker pool restarted");
          return;
        } catch (error) {
          logger.warn({ err: error, attempt }, "could not start a worker pool yet");
        }
      }
    } finally {
      restarting = false;
    }
  };
  const supervise = (current: Runner) => {
    current.promise.then(
      () => current === runner && void restart(new Error("the worker pool ended")),
      (error: unknown) => current === runner && void restart(error),
    );
  };
  const onPoolEnding = ({ workerPool }: { workerPool: { id: string } }) => {
    if (poolIds.has(workerPool.id)) void restart(new Error(`worker pool ${workerPool.id} is shutting down`));
  };
  events.on("pool:gracefulShutdown", onPoolEnding);
  events.on("pool:forcefulShutdown", onPoolEnding);
  events.on("pool:fatalError", onPoolEnding);
  supervise(runner);

  // The hand-overs, one run at a time (a slow one is not stacked on).
  let recovering = false;
  const recover = async () => {
    if (recovering) return;
    recovering = true;
    try {
      // Independent: a failure of one does not hold the other back.
      await Promise.all([
        recoverAbandonedJobs(db, settings.leaseMs, logger).catch((error: unknown) => logger.warn({ err: error }, "recovering abandoned jobs failed")),
        recoverInlineClaims(db, inlineSenders, inline, settings.leaseMs, logger),
      ]);
    } finally {
      recovering = false;
    }
  };
  const beat = async () => {
    await pulse().catch((error: unknown) => logger.warn({ err: error }, "heartbeat failed"));
    await recover();
  };
  await beat();
  const timer = setInterval(
    () => {
      void beat();
    },
    Math.max(100, Math.floor(settings.leaseMs / 3)),
  );
  timer.unref();

  // The outbox's safety net: records waiting with no job get one.
  const sweep = async () => {
    const queued = (await sweepHandling(db)).filter((r) => r.queued > 0);
    if (queued.length > 0) logger.warn({ queued }, "handling sweep queued records whose jobs were missing");
  };
  const sweepTimer = setInterval(() => {
    sweep().catch((error) => logger.warn({ err: error }, "handling sweep failed"));
  }, settings.sweepMs ?? 30_000);
  sweepTimer.unref();

  const runningCatchUps = catchUps.map((bot) => startCatchUp(bot, runtime, { idleMs: settings.catchUpIdleMs ?? 100, errorMs: 1_000 }, logger));

  return {
    processId,
    get runner() {
      return runner;
    },
    markShuttingDown() {
      shuttingDown = true;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(sweepTimer);
      // Sends started inline by the last jobs are waited for like the jobs themselves.
      const finished = Promise.all([...runningCatchUps.map((c) => c.stop()), stopQuietly(runner).then(() => inline.settled())]);
      if (!(await settlesWithin(finished, graceMs))) {
        logger.warn({ graceMs }, "shutdown grace over: sends still in flight are cut short and left Running, in doubt");
        cutOff.abort();
        if (!(await settlesWithin(finished, HAND_BACK_MS))) logger.warn("jobs still held at shutdown come back through the lease");
      } else {
        await finished;
      }
      // The heartbeat went on while sends finished (a grace longer than the lease must not hand them over).
      clearInterval(timer);
      await pulseDb
        .deleteFrom("tidings.worker_heartbeats")
        .where("process_id", "=", processId)
        .execute()
        .catch(() => {});
      await pulsePool.end().catch(() => {});
    },
  };
}

/** Whether the promise settles (either way) within ms; its rejection is the caller's to see later. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Unlock jobs held by worker pools whose process stopped heart-beating for a
 * whole lease (read from graphile-worker's public jobs view). The runner then
 * finds those records Running under the same job and hands them over cleanly
 * (see claimAndLoad in runner.ts).
 */
async function recoverAbandonedJobs(db: Db, leaseMs: number, logger?: Logger): Promise<string[]> {
  const { rows } = await sql<{ locked_by: string }>`
    select distinct j.locked_by
    from graphile_worker.jobs j
    where j.locked_by is not null
      and j.locked_at < now() - make_interval(secs => ${leaseMs / 1000})
      and not exists (
        select 1 from tidings.worker_heartbeats h
        where j.locked_by = any(h.worker_ids)
          and h.heartbeat_at > now() - make_interval(secs => ${leaseMs / 1000}))`.execute(db);
  const dead = rows.map((r) => r.locked_by);
  if (dead.length === 0) return dead;
  await sql`select graphile_worker.force_unlock_workers(${dead}::text[])`.execute(db);
  await sql`
    delete from tidings.worker_heartbeats
    where heartbeat_at < now() - make_interval(secs => ${(leaseMs * 10) / 1000})`.execute(db);
  logger?.warn({ workers: dead }, "unlocked jobs of workers that stopped heart-beating");
  return dead;
}
