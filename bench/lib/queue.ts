import { Logger, run, type Runner } from "graphile-worker";
import type pg from "pg";
import { sleep } from "./stats";

const quiet = new Logger(() => () => {});

/**
 * graphile-worker on no-op jobs, same database and settings as tidings'
 * workers (src/bots/worker.ts): the most jobs per second this queue gives
 * here, batched (local queue, batched completion) and one at a time.
 */
export async function rawQueue(pool: pg.Pool, options: { jobs: number; concurrency: number; batched: boolean }): Promise<number> {
  await pool.query(
    `select graphile_worker.add_jobs(array(
       select row('bench_noop', '{}'::json, null, null, null, null, null, null)::graphile_worker.job_spec
       from generate_series(1, $1)))`,
    [options.jobs],
  );
  const started = performance.now();
  const runner: Runner = await run({
    pgPool: pool,
    taskList: { bench_noop: async () => {} },
    concurrency: options.concurrency,
    pollInterval: 1000,
    noHandleSignals: true,
    logger: quiet,
    preset: {
      worker: options.batched
        ? { localQueue: { size: Math.max(options.concurrency * 2, 10) }, completeJobBatchDelay: 0, failJobBatchDelay: 0 }
        : { completeJobBatchDelay: -1, failJobBatchDelay: -1 },
    },
  });
  for (;;) {
    const { rows } = await pool.query(
      `select count(*)::int as n from graphile_worker._private_jobs j
       join graphile_worker._private_tasks t on t.id = j.task_id where t.identifier = 'bench_noop'`,
    );
    if (rows[0].n === 0) break;
    await sleep(20);
  }
  const rate = (options.jobs * 1000) / (performance.now() - started);
  await runner.stop();
  return rate;
}
