import { spawn } from "node:child_process";
import path from "node:path";
import { Logger, runMigrations } from "graphile-worker";
import pg from "pg";
import { keepBacklog, offerAtRate } from "./load";
import { percentile, sleep } from "./stats";

/**
 * The fairest yardstick for tidings: what a team would otherwise write in a
 * day. Per notification, one row and one graphile-worker job in the enqueue
 * transaction; a job that sends the email and the Slack post at once and
 * marks the row sent (bench/minimalOutboxWorker.ts). It keeps none of
 * tidings's promises (no streams, handling history, saga, views, roles): the
 * ratio says what those cost. Its own database on the same server, set up by
 * the server URL's login, as a team's first version would be.
 */
export interface MinimalOutbox {
  url: string;
  pool: pg.Pool;
  close(): Promise<void>;
}

const SCHEMA = `
  create schema minimal;
  create table minimal.notifications (
    id bigint generated always as identity primary key,
    entity_id text not null,
    email text not null,
    slack_channel text not null,
    subject text not null,
    body text not null,
    status text not null default 'pending',
    created_at timestamptz not null default now(),
    sent_at timestamptz
  );`;

export async function openMinimalOutbox(serverUrl: string): Promise<MinimalOutbox> {
  const name = `tidings_bench_minimal_${process.pid}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.query(`create database ${name}`);
  await admin.end();
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  const url = u.toString();
  const pool = new pg.Pool({ connectionString: url, max: 20, application_name: "tidings-bench-minimal" });
  pool.on("error", (error) => process.stderr.write(`idle connection failed: ${error.message}\n`));
  pool.on("connect", (client) => client.on("error", (error) => process.stderr.write(`connection failed: ${error.message}\n`)));
  await runMigrations({ pgPool: pool, logger: new Logger(() => () => {}) });
  await pool.query(SCHEMA);
  return {
    url,
    pool,
    async close() {
      await pool.end();
      const a = new pg.Client({ connectionString: serverUrl });
      await a.connect();
      await a.query(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}

export async function startMinimalWorker(env: { url: string; smtpUrl: string; slackToken: string; slackApiUrl: string; concurrency: number }) {
  const root = path.resolve(__dirname, "../..");
  const child = spawn(process.execPath, ["--import", "tsx", "bench/minimalOutboxWorker.ts"], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: env.url,
      SMTP_URL: env.smtpUrl,
      SLACK_BOT_TOKEN: env.slackToken,
      SLACK_API_URL: env.slackApiUrl,
      WORKER_CONCURRENCY: String(env.concurrency),
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  await new Promise<void>((resolve, reject) => {
    child.stderr.on("data", (d: Buffer) => (output += String(d)));
    child.stdout.on("data", (d: Buffer) => {
      output += String(d);
      if (output.includes("ready\n")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`minimal outbox worker exited with ${code}:\n${output}`)));
  });
  child.removeAllListeners("exit");
  return {
    async stop() {
      if (child.exitCode !== null) return;
      await new Promise<void>((resolve) => {
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
        setTimeout(() => child.kill("SIGKILL"), 10_000).unref();
      });
    },
  };
}

/** n notifications, each a row and its job, in one transaction. */
async function enqueue(pool: pg.Pool, n: number): Promise<void> {
  await pool.query(
    `with n as (
       insert into minimal.notifications (entity_id, email, slack_channel, subject, body)
       select 'bench-entity', 'bench@example.com', 'U0BENCH001', 'Benchmark', 'Hello from the benchmark.' from generate_series(1, $1)
       returning id)
     select graphile_worker.add_jobs(array(select row('minimal_send', json_build_object('id', id), null, null, null, null, null, null)::graphile_worker.job_spec from n))`,
    [n],
  );
}

async function sentCount(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query("select count(*)::int as n from minimal.notifications where status = 'sent'");
  return rows[0].n;
}

async function drain(pool: pg.Pool, timeoutMs = 180_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await pool.query("select 1 from minimal.notifications where status <> 'sent' limit 1")).rowCount) {
    if (Date.now() > deadline) throw new Error("the minimal outbox's backlog did not drain");
    await sleep(100);
  }
}

/** Sustained throughput, as tidings's is measured (bench/lib/endToEnd.ts sustained): a backlog kept, 20 per transaction. */
export async function minimalSustained(pool: pg.Pool, options: { seconds: number; warmupSeconds: number; backlog: number }) {
  const r = await keepBacklog({ ...options, batch: 20, enqueue: (n) => enqueue(pool, n), done: () => sentCount(pool) });
  await drain(pool);
  return { perSec: r.perSec, notifications: r.done };
}

/** Latency at a fixed offered rate, one notification per transaction, as tidings's (enqueue → sent, the database's times). */
export async function minimalLatencyAtRate(pool: pg.Pool, options: { ratePerSec: number; seconds: number }) {
  const { rows: start } = await pool.query("select coalesce(max(id), 0)::bigint as id from minimal.notifications");
  await offerAtRate(options.ratePerSec, options.seconds, () => enqueue(pool, 1));
  await drain(pool);
  const { rows } = await pool.query("select extract(epoch from (sent_at - created_at)) * 1000 as ms from minimal.notifications where id > $1", [start[0].id]);
  const sorted = rows.map((r) => Number(r.ms)).sort((a, b) => a - b);
  return { count: sorted.length, p50: percentile(sorted, 50), p95: percentile(sorted, 95), p99: percentile(sorted, 99) };
}

export async function minimalBytesPerNotification(pool: pg.Pool): Promise<number> {
  const { rows } = await pool.query("select pg_total_relation_size('minimal.notifications')::bigint as bytes, (select count(*) from minimal.notifications)::bigint as n");
  return Number(rows[0].bytes) / Math.max(1, Number(rows[0].n));
}
