/**
 * `npm run bench:profile`: where the time of one notification goes. Runs a
 * burst of notifications through real worker processes on an embedded
 * PostgreSQL with pg_stat_statements, samples wait events while they drain,
 * and prints the statements that cost the most, jobs and commits per
 * notification. A diagnostic, not a benchmark figure.
 *
 * Settings: PROFILE_NOTIFICATIONS (default 2000), PROFILE_WORKERS (1),
 * WORKER_CONCURRENCY (64), PROFILE_RATE (notifications/s: offer them at this
 * rate, one transaction each, instead of all up front, and print where the
 * latency of each step goes).
 *
 * The worker processes and the enqueues run as the service login
 * (tidings_app), as in production; the profile's own queries as the embedded
 * server's superuser.
 */
import { startSlackStandIn } from "../test/helpers/slackStandIn";
import { startSmtpServer } from "../test/helpers/smtpServer";
import { openBenchDatabase } from "./lib/database";
import { benchEntity, completedCount, startWorkers, waitForWorkers } from "./lib/endToEnd";
import { enqueueNotification } from "../src/notification/enqueue";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { sleep } from "./lib/stats";

const TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());

/**
 * The fields of /proc/<pid>/stat after the command name (which is in
 * parentheses and may hold spaces): [1] the parent's pid, [11] utime,
 * [12] stime, [13] cutime, [14] cstime, in clock ticks (Linux).
 */
function procStat(pid: number): string[] {
  return readFileSync(`/proc/${pid}/stat`, "utf8").split(")").at(-1)!.trim().split(" ");
}

const ticksToMs = (ticks: number) => (ticks * 1000) / TICKS_PER_SECOND;

/** CPU time (user + system, ms) these processes have used so far. */
function cpuMs(pids: readonly number[]): number {
  return pids.reduce((sum, pid) => {
    const fields = procStat(pid);
    return sum + ticksToMs(Number(fields[11]) + Number(fields[12]));
  }, 0);
}

/**
 * CPU time of the whole PostgreSQL server (ms): its postmaster, every live
 * backend and auxiliary process, and what ended processes left in the
 * postmaster's cutime/cstime. Parsing, planning and execution alike, which
 * pg_stat_statements's execution and planning times leave part of out.
 */
function serverCpuMs(postmaster: number): number {
  const own = procStat(postmaster);
  let ticks = Number(own[11]) + Number(own[12]) + Number(own[13]) + Number(own[14]);
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const fields = procStat(Number(entry));
      if (Number(fields[1]) === postmaster) ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // The process ended while being read: its time is in the postmaster's cutime now.
    }
  }
  return ticksToMs(ticks);
}

const COUNT = Number(process.env.PROFILE_NOTIFICATIONS ?? 2000);
const WORKERS = Number(process.env.PROFILE_WORKERS ?? 1);
const CONCURRENCY = Number(process.env.WORKER_CONCURRENCY ?? 64);
const RATE = process.env.PROFILE_RATE ? Number(process.env.PROFILE_RATE) : null;

/** Percentiles of each step of a notification, from the recorded_at (transaction start) of the records it wrote. */
async function stepLatencies(pool: import("pg").Pool): Promise<void> {
  const { rows } = await pool.query(`
    with n as (
      select c.id, c.recorded_at as enqueued,
        (select min(recorded_at) from notification.events e where e.id = c.id and e.type = 'SendNotificationRequestedEvent') as handled,
        (select min(recorded_at) from email.events e where e.id = c.id and e.type = 'SendEmailRequestedEvent') as email_claimed,
        (select min(recorded_at) from email.events e where e.id = c.id and e.type = 'SucceededInSendingEmailEvent') as email_sent,
        (select min(recorded_at) from slack.events e where e.id = c.id and e.type = 'SendSlackMessageRequestedEvent') as slack_claimed,
        (select min(recorded_at) from slack.events e where e.id = c.id and e.type = 'SucceededInSendingSlackMessageEvent') as slack_sent,
        (select min(recorded_at) from notification.events e where e.id = c.id and e.type like 'SentOn%') as outcome
      from notification.client_operations c)
    select step, round(percentile_cont(0.5) within group (order by ms)::numeric, 1) as p50,
           round(percentile_cont(0.95) within group (order by ms)::numeric, 1) as p95,
           round(percentile_cont(0.99) within group (order by ms)::numeric, 1) as p99
    from n, lateral (values
      ('1 enqueued -> notification bot', extract(epoch from handled - enqueued) * 1000),
      ('2 notification bot -> email claimed', extract(epoch from email_claimed - handled) * 1000),
      ('3 email claimed -> email sent recorded', extract(epoch from email_sent - email_claimed) * 1000),
      ('2 notification bot -> slack claimed', extract(epoch from slack_claimed - handled) * 1000),
      ('3 slack claimed -> slack sent recorded', extract(epoch from slack_sent - slack_claimed) * 1000),
      ('4 last send recorded -> outcome', extract(epoch from outcome - greatest(email_sent, slack_sent)) * 1000),
      ('5 enqueued -> outcome', extract(epoch from outcome - enqueued) * 1000)) as s(step, ms)
    group by step order by step`);
  process.stdout.write(`\nlatency of each step, ms (p50 / p95 / p99):\n`);
  for (const r of rows) process.stdout.write(`  ${r.step.padEnd(40)} ${r.p50} / ${r.p95} / ${r.p99}\n`);
}

/** Bytes per notification by table (heap + indexes + TOAST, after a VACUUM so dead rows of updated handling state do not count). */
async function storageByTable(pool: import("pg").Pool, count: number): Promise<void> {
  await pool.query("vacuum analyze");
  const { rows } = await pool.query(`
    select n.nspname || '.' || c.relname as name, pg_table_size(c.oid)::bigint as heap, pg_indexes_size(c.oid)::bigint as indexes, c.reltuples::bigint as rows
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname in ('notification', 'email', 'slack') and c.relkind in ('r', 'p')
    order by pg_total_relation_size(c.oid) desc`);
  const total = rows.reduce((sum, r) => sum + Number(r.heap) + Number(r.indexes), 0);
  const per = (n: unknown, digits = 0) => (Number(n) / count).toFixed(digits);
  process.stdout.write(`\nbytes per notification by table (after vacuum; total ${per(total)}): heap + indexes, rows per notification\n`);
  for (const r of rows.slice(0, 20))
    process.stdout.write(`  ${per(r.heap).padStart(6)} + ${per(r.indexes).padStart(6)}  ${per(Math.max(0, Number(r.rows)), 2).padStart(5)}  ${r.name}\n`);
}

/** One notification's rows in every stream: type, whole-row and payload sizes, so what is copied where can be seen. */
async function sampleRows(pool: import("pg").Pool): Promise<void> {
  const { rows: ids } = await pool.query("select id from notification.client_operations order by position desc limit 1");
  if (ids.length === 0) return;
  process.stdout.write(`\none notification's rows (${ids[0].id}): bytes of the row, of its payload; the payload\n`);
  const { rows: streams } = await pool.query("select name from tidings.streams order by name");
  for (const { name } of streams) {
    const table = name
      .split(".")
      .map((part: string) => `"${part}"`)
      .join(".");
    const { rows: records } = await pool.query(
      `select type, pg_column_size(t.*) as row_bytes, pg_column_size(payload) as payload_bytes, left(payload::text, 400) as payload
       from ${table} t where id = $1 order by position`,
      [ids[0].id],
    );
    for (const r of records) process.stdout.write(`  ${String(r.row_bytes).padStart(5)} ${String(r.payload_bytes).padStart(5)}  ${name} ${r.type}  ${r.payload}\n`);
  }
}

/** pg_stat_statements's top entries by a time column: total, calls, mean, role and the query's start. */
async function printTopStatements(pool: import("pg").Pool, by: "total_exec_time" | "total_plan_time", limit: number): Promise<void> {
  const { rows } = await pool.query(
    `select calls, round(${by}::numeric, 0) as ms, round((${by} / nullif(calls, 0))::numeric, 3) as mean_ms,
            pg_get_userbyid(userid) as role, regexp_replace(left(query, 140), '\\s+', ' ', 'g') as q
     from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())
     order by ${by} desc limit ${limit}`,
  );
  for (const r of rows) process.stdout.write(`${String(r.ms).padStart(7)} ms ${String(r.calls).padStart(7)} calls ${String(r.mean_ms).padStart(8)} ms/call  [${r.role}] ${r.q}\n`);
}

async function main() {
  if (process.env.DATABASE_URL) throw new Error("bench:profile starts its own embedded PostgreSQL; unset DATABASE_URL");
  const bench = await openBenchDatabase(20, [
    "-c",
    "shared_preload_libraries=pg_stat_statements",
    "-c",
    "pg_stat_statements.track=all",
    "-c",
    "pg_stat_statements.track_planning=on",
    "-c",
    "track_functions=all",
  ]);
  const smtp = await startSmtpServer();
  const slack = await startSlackStandIn();
  try {
    await bench.adminPool.query("create extension if not exists pg_stat_statements");
    await benchEntity(bench.db);
    const enqueueOne = () => enqueueNotification(bench.db, { entityId: "bench-entity", subject: "Profile", text: "Hello." });
    if (RATE === null) {
      for (let i = 0; i < COUNT; i += 50) await Promise.all(Array.from({ length: Math.min(50, COUNT - i) }, enqueueOne));
    }
    const jobsCreated = async () => {
      const { rows } = await bench.adminPool.query(`select pg_get_serial_sequence('graphile_worker._private_jobs', 'id') as s`);
      return (await bench.adminPool.query(`select last_value from ${rows[0].s}`)).rows[0].last_value as string;
    };
    const stat = async () => (await bench.adminPool.query("select xact_commit::bigint as c from pg_stat_database where datname = current_database()")).rows[0].c as string;
    await bench.adminPool.query("select pg_stat_statements_reset(), pg_stat_reset()");
    const jobs0 = Number(await jobsCreated());
    const commits0 = Number(await stat());
    const env = { databaseUrl: bench.url, smtpUrl: smtp.url, slackToken: slack.token, slackApiUrl: slack.apiUrl, concurrency: CONCURRENCY };
    const workers = await startWorkers(WORKERS, env);
    await waitForWorkers(bench.adminPool, WORKERS);
    const cpu0 = cpuMs(workers.pids);
    const { rows: backend } = await bench.adminPool.query("select pg_backend_pid() as pid");
    const postmaster = Number(procStat(backend[0].pid)[1]);
    const serverCpu0 = serverCpuMs(postmaster);
    const t0 = performance.now();
    const offered =
      RATE === null
        ? Promise.resolve()
        : (async () => {
            const pending: Promise<unknown>[] = [];
            for (let i = 0; i < COUNT; i++) {
              pending.push(enqueueOne());
              const due = t0 + ((i + 1) * 1000) / RATE;
              if (due > performance.now()) await sleep(due - performance.now());
            }
            await Promise.all(pending);
          })();
    // PROFILE_ANALYZE_EVERY_MS: analyze the database that often while it drains, as if its statistics were current.
    const analyzeEvery = Number(process.env.PROFILE_ANALYZE_EVERY_MS ?? 0);
    const analyzer = analyzeEvery > 0 ? setInterval(() => void bench.adminPool.query("analyze").catch(() => {}), analyzeEvery) : null;
    const waits = new Map<string, number>();
    let samples = 0;
    for (;;) {
      const { rows } = await bench.adminPool.query(
        `select coalesce(wait_event_type || ':' || wait_event, state) as w, count(*)::int as n
         from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and state <> 'idle' group by 1`,
      );
      samples += 1;
      for (const r of rows) waits.set(r.w, (waits.get(r.w) ?? 0) + r.n);
      if (samples % 10 === 0 && (await completedCount(bench.adminPool)) >= COUNT) break;
      await Promise.race([offered, sleep(0)]);
      await sleep(50);
    }
    await offered;
    if (analyzer) clearInterval(analyzer);
    const seconds = (performance.now() - t0) / 1000;
    const workerCpuMs = cpuMs(workers.pids) - cpu0;
    const serverCpu = serverCpuMs(postmaster) - serverCpu0;
    await workers.stop();
    const jobs = Number(await jobsCreated()) - jobs0;
    const commits = Number(await stat()) - commits0;
    process.stdout.write(`${COUNT} notifications drained in ${seconds.toFixed(1)} s by ${WORKERS} worker(s): ${(COUNT / seconds).toFixed(1)}/s\n`);
    process.stdout.write(`jobs per notification ${(jobs / COUNT).toFixed(2)}, commits per notification ${(commits / COUNT).toFixed(2)}\n`);
    // Work every notification leaves behind in graphile-worker's table: a job due later (before 0016, each saga's deadline).
    const { rows: left } = await bench.adminPool.query(
      `select count(*)::int as n, pg_total_relation_size('graphile_worker._private_jobs')::bigint as bytes from graphile_worker._private_jobs`,
    );
    process.stdout.write(
      `jobs still queued after the drain ${left[0].n} (${(left[0].n / COUNT).toFixed(2)} per notification), jobs table ${(Number(left[0].bytes) / COUNT).toFixed(0)} bytes per notification\n`,
    );
    const { rows: statements } = await bench.adminPool.query(
      `select sum(calls)::bigint as calls, round(sum(total_exec_time)::numeric) as ms, round(sum(total_plan_time)::numeric) as plan_ms from pg_stat_statements
       where toplevel and dbid = (select oid from pg_database where datname = current_database())`,
    );
    process.stdout.write(
      `statements per notification (top level) ${(Number(statements[0].calls) / COUNT).toFixed(1)}, ` +
        `server execution time per notification ${(Number(statements[0].ms) / COUNT).toFixed(2)} ms, planning ${(Number(statements[0].plan_ms) / COUNT).toFixed(2)} ms\n`,
    );
    process.stdout.write(`worker CPU time per notification ${(workerCpuMs / COUNT).toFixed(2)} ms (user + system, all worker processes)\n`);
    process.stdout.write(
      `PostgreSQL CPU time per notification ${(serverCpu / COUNT).toFixed(2)} ms (user + system, the whole server, the load generator's and this profile's own queries included)\n`,
    );
    if (RATE !== null) await stepLatencies(bench.adminPool);
    await storageByTable(bench.adminPool, COUNT);
    await sampleRows(bench.adminPool);
    process.stdout.write(`\nactive backends by wait event (mean over ${samples} samples):\n`);
    for (const [w, n] of [...waits].sort((a, b) => b[1] - a[1]).slice(0, 15)) process.stdout.write(`  ${(n / samples).toFixed(2).padStart(7)}  ${w}\n`);
    process.stdout.write(
      `\ntop statements by total execution time ([role]; one entry per role and query; statements run by triggers\n` +
        `deferred to commit count as top level; PostgreSQL may merge statements on same-named tables of different schemas):\n`,
    );
    await printTopStatements(bench.adminPool, "total_exec_time", 30);
    process.stdout.write(`\ntop statements by planning time:\n`);
    await printTopStatements(bench.adminPool, "total_plan_time", 15);
    const { rows: functions } = await bench.adminPool.query(
      `select schemaname || '.' || funcname as f, calls, round(self_time::numeric) as self_ms, round(total_time::numeric) as total_ms
       from pg_stat_user_functions order by self_time desc limit 15`,
    );
    process.stdout.write(`\ntop functions by own time (self ms, total ms, calls per notification):\n`);
    for (const r of functions)
      process.stdout.write(`${String(r.self_ms).padStart(7)} ${String(r.total_ms).padStart(7)} ${(Number(r.calls) / COUNT).toFixed(2).padStart(6)}  ${r.f}\n`);
    const { rows: byCalls } = await bench.adminPool.query(
      `select calls, pg_get_userbyid(userid) as role, regexp_replace(left(query, 120), '\\s+', ' ', 'g') as q
       from pg_stat_statements where toplevel and dbid = (select oid from pg_database where datname = current_database())
       order by calls desc limit 40`,
    );
    process.stdout.write(`\ntop statements by calls (per notification):\n`);
    for (const r of byCalls) process.stdout.write(`${(Number(r.calls) / COUNT).toFixed(2).padStart(7)}  [${r.role}] ${r.q}\n`);
  } finally {
    await smtp.close();
    await slack.close();
    await bench.close();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`profile failed: ${(error as Error).stack}\n`);
    process.exit(1);
  },
);
