import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import type pg from "pg";
import { inTransaction, type Db } from "../../src/db/database";
import { putEntity } from "../../src/entities/entity.repository";
import { enqueueNotification, enqueueNotificationInTransaction } from "../../src/notification/enqueue";
import { keepBacklog, offerAtRate } from "./load";
import { percentile, sleep } from "./stats";

const OUTCOMES = [
  "SentOnAllPreparedChannelsEvent",
  "SentOnSomePreparedChannelsEvent",
  "CouldNotSendOnAnyPreparedChannelEvent",
  "CouldNotGetOrUseAudienceEvent",
  "AudienceOptedOutOfAllChannelsEvent",
  "CouldNotPrepareToSendOnAnyChannelEvent",
];

export interface WorkerEnv {
  databaseUrl: string;
  smtpUrl: string;
  slackToken: string;
  slackApiUrl: string;
  concurrency: number;
}

/**
 * Real worker processes: `src/main.ts` with RUN_API=false, configured from
 * the environment like production: DATABASE_URL is the service login's, and
 * no MIGRATION_DATABASE_URL (the bench migrated beforehand, as `npm run
 * migrate` does), so each process checks its login and the schema and serves.
 */
export async function startWorkers(count: number, env: WorkerEnv): Promise<{ stop(): Promise<void>; pids: number[] }> {
  const root = path.resolve(__dirname, "../..");
  const children: ChildProcess[] = [];
  await Promise.all(
    Array.from({ length: count }, () => {
      const { MIGRATION_DATABASE_URL: _migrationUrl, ...inherited } = process.env;
      const child = spawn(
        process.execPath,
        [...(process.env.BENCH_CPU_PROF ? ["--cpu-prof", `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []), "--import", "tsx", "src/main.ts"],
        {
          cwd: root,
          env: {
            ...inherited,
            DATABASE_URL: env.databaseUrl,
            RUN_API: "false",
            RUN_WORKER: "true",
            SMTP_URL: env.smtpUrl,
            SLACK_BOT_TOKEN: env.slackToken,
            SLACK_API_URL: env.slackApiUrl,
            WORKER_CONCURRENCY: String(env.concurrency),
            DB_POOL_SIZE: String(Math.min(60, env.concurrency + 10)),
            SAGA_DEADLINE_MS: String(3_600_000),
            LOG_LEVEL: "warn",
          },
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      children.push(child);
      let output = "";
      return new Promise<void>((resolve, reject) => {
        const onData = (d: Buffer) => {
          output += String(d);
        };
        child.stdout.on("data", onData);
        child.stderr.on("data", onData);
        child.once("exit", (code) => reject(new Error(`worker exited with ${code}:\n${output}`)));
        // LOG_LEVEL=warn hides "workers started"; poll the heartbeat table instead (below).
        setTimeout(resolve, 100);
      });
    }),
  );
  return {
    pids: children.map((c) => c.pid!),
    async stop() {
      await Promise.all(
        children.map(
          (c) =>
            new Promise<void>((resolve) => {
              if (c.exitCode !== null) return resolve();
              c.removeAllListeners("exit");
              c.once("exit", () => resolve());
              c.kill("SIGTERM");
              setTimeout(() => c.kill("SIGKILL"), 10_000).unref();
            }),
        ),
      );
    },
  };
}

/** `pool` is the bench's own (superuser) connections: the service login cannot read the engine's tables directly. */
export async function waitForWorkers(pool: pg.Pool, count: number): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const { rows } = await pool.query("select count(*)::int as n from tidings.worker_heartbeats where cardinality(worker_ids) > 0");
    if (rows[0].n >= count) return;
    if (Date.now() > deadline) throw new Error("workers did not start within 60 s");
    await sleep(200);
  }
}

export async function benchEntity(db: Db): Promise<void> {
  await putEntity(
    db,
    "bench-entity",
    { kind: "user", name: "Bench", email: "bench@example.com", slack: "U0BENCH001", preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all" } },
    "bench",
  );
}

export async function completedCount(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query("select count(distinct id)::int as n from notification.events where type = any($1)", [OUTCOMES]);
  return rows[0].n;
}

export async function commitCount(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query("select xact_commit::bigint as n from pg_stat_database where datname = current_database()");
  return Number(rows[0].n);
}

const request = { entityId: "bench-entity", subject: "Benchmark", text: "Hello from the benchmark." };
const enqueue = (db: Db) => enqueueNotification(db, request);
/** n notifications in one transaction: what the API's group commit does with requests that arrive together. */
const enqueueTogether = (db: Db, n: number) =>
  inTransaction(db, null, async (tx) => {
    for (let i = 0; i < n; i++) await enqueueNotificationInTransaction(tx, request);
  });

/**
 * Sustained throughput: keep a backlog of `backlog` notifications waiting,
 * so the workers never starve, and count outcomes over `seconds` after a
 * warm-up. Notifications are enqueued 20 per transaction, as the API's group
 * commit does with requests that arrive together (the producer's own cost
 * is measured in the HTTP section). `db` is the service login's (what is
 * measured), `pool` the bench's own for counting.
 */
export async function sustained(db: Db, pool: pg.Pool, options: { seconds: number; warmupSeconds: number; backlog: number }) {
  const r = await keepBacklog({ ...options, batch: 20, enqueue: (n) => enqueueTogether(db, n), done: () => completedCount(pool), during: () => commitCount(pool) });
  return { perSec: r.perSec, notifications: r.done, commitsPerNotification: r.done > 0 ? r.duringDelta / r.done : NaN };
}

/** Wait until every enqueued notification has its outcome (drain before the next measurement). */
export async function drain(pool: pg.Pool, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await pool.query("select count(*)::int as n from notification.client_operations");
    if ((await completedCount(pool)) >= rows[0].n) return;
    if (Date.now() > deadline) throw new Error("the backlog did not drain");
    await sleep(200);
  }
}

/**
 * Latency at a fixed offered rate (open loop): enqueue → outcome event,
 * measured from the two records' recorded_at (transaction start times in
 * PostgreSQL, so client and server clocks cannot disagree).
 */
export async function latencyAtRate(db: Db, pool: pg.Pool, options: { ratePerSec: number; seconds: number }) {
  const { rows: start } = await pool.query("select coalesce(max(position), 0)::bigint as p from notification.client_operations");
  const startPosition = Number(start[0].p);
  await offerAtRate(options.ratePerSec, options.seconds, () => enqueue(db));
  await drain(pool);
  const { rows } = await pool.query(
    `select extract(epoch from (o.recorded_at - c.recorded_at)) * 1000 as ms
     from notification.client_operations c
     join lateral (select min(recorded_at) as recorded_at from notification.events e where e.id = c.id and e.type = any($2)) o on true
     where c.position > $1`,
    [startPosition, OUTCOMES],
  );
  const sorted = rows.map((r) => Number(r.ms)).sort((a, b) => a - b);
  return { count: sorted.length, p50: percentile(sorted, 50), p95: percentile(sorted, 95), p99: percentile(sorted, 99) };
}

export async function bytesPerNotification(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query(`
    select (select sum(pg_total_relation_size(c.oid)) from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname in ('notification', 'email', 'slack') and c.relkind in ('r', 'p'))::bigint as bytes,
           (select count(*) from notification.client_operations)::bigint as n`);
  return Number(rows[0].bytes) / Math.max(1, Number(rows[0].n));
}
