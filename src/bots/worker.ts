import { EventEmitter } from "node:events";
import { randomUUID } from "node:crypto";
import os from "node:os";
import { Logger as WorkerLogger, run, type Runner, type TaskList, type WorkerEvents } from "graphile-worker";
import { sql } from "kysely";
import type pg from "pg";
import type { Db } from "../db/database";
import type { Logger } from "../logging/logger";
import { createTask } from "./runner";
import { taskIdentifier, type Bot, type BotRuntime } from "./bot";

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
}

export interface TidingsWorker {
  processId: string;
  runner: Runner;
  stop(): Promise<void>;
}

function adaptLogger(logger: Logger): WorkerLogger {
  return new WorkerLogger((scope) => (level, message, meta) => {
    const child = logger.child({ component: "graphile-worker", ...scope });
    if (level === "error") child.error(meta ?? {}, message);
    else if (level === "warning") child.warn(meta ?? {}, message);
    else child.debug(meta ?? {}, message);
  });
}

/** Start graphile-worker with one task per bot, plus the heartbeat that lets dead workers' jobs be recovered. */
export async function startWorker<TDeps>(options: {
  pool: pg.Pool;
  db: Db;
  bots: readonly Bot<TDeps>[];
  runtime: BotRuntime<TDeps>;
  settings: WorkerSettings;
  logger: Logger;
}): Promise<TidingsWorker> {
  const { pool, db, bots, runtime, settings, logger } = options;
  const taskList: TaskList = {};
  for (const bot of bots) taskList[taskIdentifier(bot)] = createTask(bot, runtime);

  const processId = randomUUID();
  const poolIds = new Set<string>();
  const events: WorkerEvents = new EventEmitter() as WorkerEvents;
  events.on("pool:create", ({ workerPool }) => poolIds.add(workerPool.id));

  await db
    .insertInto("tidings.worker_heartbeats")
    .values({ process_id: processId, worker_ids: [], hostname: os.hostname(), pid: process.pid })
    .execute();

  const runner = await run({
    pgPool: pool,
    taskList,
    concurrency: settings.concurrency,
    pollInterval: settings.pollIntervalMs,
    noHandleSignals: true,
    logger: adaptLogger(logger),
    events,
    preset: {
      worker: {
        // Fetch jobs in batches and complete them in batches: about 10× the
        // jobs per second of one-at-a-time on a 2-core machine.
        localQueue: { size: Math.max(settings.concurrency * 2, 10) },
        completeJobBatchDelay: 0,
        failJobBatchDelay: 0,
      },
    },
  });

  const beat = async () => {
    await db
      .updateTable("tidings.worker_heartbeats")
      .set({ worker_ids: [...poolIds], heartbeat_at: sql`now()` })
      .where("process_id", "=", processId)
      .execute();
    await recoverAbandonedJobs(db, settings.leaseMs, logger);
  };
  await beat().catch((error) => logger.warn({ err: error }, "heartbeat failed"));
  const timer = setInterval(() => {
    beat().catch((error) => logger.warn({ err: error }, "heartbeat failed"));
  }, Math.max(100, Math.floor(settings.leaseMs / 3)));
  timer.unref();

  let stopped = false;
  return {
    processId,
    runner,
    async stop() {
      if (stopped) return;
      stopped = true;
      clearInterval(timer);
      await runner.stop();
      await db.deleteFrom("tidings.worker_heartbeats").where("process_id", "=", processId).execute().catch(() => {});
    },
  };
}

/**
 * Unlock jobs held by worker pools whose process stopped heart-beating for a
 * whole lease. The runner then finds those records Running under the same
 * job and hands them over cleanly (see BotRun.claimForJob).
 */
export async function recoverAbandonedJobs(db: Db, leaseMs: number, logger?: Logger): Promise<string[]> {
  const { rows } = await sql<{ locked_by: string }>`
    select distinct j.locked_by
    from graphile_worker._private_jobs j
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
