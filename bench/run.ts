/**
 * `npm run bench`: tidings' figures beside the baselines that bound them,
 * all measured in this one run on this machine. Prints a report; the last
 * line is one JSON object with every figure.
 *
 * Settings (environment): DATABASE_URL (else an embedded PostgreSQL),
 * BENCH_SECONDS (sustained end-to-end window, default 30), BENCH_SCALE_SECONDS
 * (per worker count, default 15), BENCH_AUDIT_ROWS (comma list, default
 * "1000000,10000000"), BENCH_QUICK=1 (short windows, for trying it out),
 * BENCH_SECTIONS (comma list of ceiling, queue, e2e, minimal, scaling, http,
 * audit, idle; default all). `minimal` is the minimal outbox (bench/lib/minimalOutbox.ts):
 * the same work without tidings's promises, measured like tidings.
 *
 * tidings's own code (worker processes, the HTTP app, enqueues) runs as the
 * service login, as in production; the bench's setup and the queries that
 * count and measure run as DATABASE_URL's login (a superuser), as the tests' do.
 */
import { startSlackStandIn } from "../test/helpers/slackStandIn";
import { startSmtpServer } from "../test/helpers/smtpServer";
import { channelsCeiling } from "./lib/channels";
import { freshDatabase, openBenchDatabase } from "./lib/database";
import { benchEntity, bytesPerNotification, commitCount, drain, latencyAtRate, startWorkers, sustained, waitForWorkers } from "./lib/endToEnd";
import { rawQueue } from "./lib/queue";
import { line, round, section, sleep } from "./lib/stats";
import { createPool } from "../src/db/database";
import { httpEnqueue } from "./lib/http";
import { auditQuery } from "./lib/audit";
import { machineBusy } from "./lib/idle";
import { minimalBytesPerNotification, minimalLatencyAtRate, minimalSustained, openMinimalOutbox, startMinimalWorker } from "./lib/minimalOutbox";
import { targetVerdicts } from "./lib/targets";

const quick = process.env.BENCH_QUICK === "1";
const seconds = Number(process.env.BENCH_SECONDS ?? (quick ? 8 : 30));
const scaleSeconds = Number(process.env.BENCH_SCALE_SECONDS ?? (quick ? 5 : 15));
const auditRows = (process.env.BENCH_AUDIT_ROWS ?? (quick ? "100000" : "1000000,10000000"))
  .split(",")
  .map(Number)
  .filter((n) => n > 0);
const CONCURRENCY = Number(process.env.WORKER_CONCURRENCY ?? 64);
const SECTIONS = ["ceiling", "queue", "e2e", "minimal", "scaling", "http", "idle", "audit"] as const;
/** BENCH_SECTIONS=http,audit runs only those (ratios need their baseline's section too). */
const only = (process.env.BENCH_SECTIONS ?? SECTIONS.join(",")).split(",").map((s) => s.trim());
const unknown = only.filter((s) => !(SECTIONS as readonly string[]).includes(s));
if (unknown.length > 0) throw new Error(`BENCH_SECTIONS: unknown section(s) ${unknown.join(", ")}; known: ${SECTIONS.join(", ")}`);
const runs = (section: (typeof SECTIONS)[number]) => only.includes(section);

async function main() {
  const figures: Record<string, unknown> = { machine: { cpus: (await import("node:os")).cpus().length, node: process.version } };
  const bench = await openBenchDatabase(40);
  const smtp = await startSmtpServer();
  const slack = await startSlackStandIn();
  process.stdout.write(`tidings benchmark: ${bench.describe}; ${figures.machine ? JSON.stringify(figures.machine) : ""}\n`);
  try {
    let ceiling: Awaited<ReturnType<typeof channelsCeiling>> | null = null;
    if (runs("ceiling")) {
      section("Channels-only ceiling (nodemailer + Slack SDK to the loopback servers, no database)");
      ceiling = await channelsCeiling(smtp, slack, quick ? 1000 : 3000, CONCURRENCY);
      line("emails/s", String(round(ceiling.emailsPerSec)));
      line("Slack posts/s", String(round(ceiling.postsPerSec)));
      line("email+Slack pairs/s", String(round(ceiling.pairsPerSec)));
      figures.channelsCeiling = ceiling;
    }

    let batched: number | null = null;
    if (runs("queue")) {
      section("Raw queue (graphile-worker, no-op jobs, same database and settings)");
      // Set up like the bench database; graphile-worker works the queue as the
      // service login, as tidings's workers do (src/db/migrate.ts grantQueueToService).
      const queueDb = await freshDatabase(bench.serverUrl, `tidings_bench_queue_${process.pid}`, bench.login);
      const queuePool = createPool(queueDb.url, 40, "tidings-bench-queue");
      batched = await rawQueue(queuePool, { jobs: quick ? 5000 : 20000, concurrency: CONCURRENCY, batched: true });
      const unbatched = await rawQueue(queuePool, { jobs: quick ? 1000 : 3000, concurrency: CONCURRENCY, batched: false });
      await queuePool.end();
      await queueDb.drop();
      line("jobs/s batched (local queue, batched completion)", String(round(batched)));
      line("jobs/s one at a time", String(round(unbatched)));
      figures.rawQueue = { batchedJobsPerSec: batched, unbatchedJobsPerSec: unbatched };
    }

    let tidings: { perSec: number; latencyRate: number; latency: { p50: number; p95: number; p99: number }; slow: { p50: number; p99: number }; bytes: number } | null = null;
    const env = { databaseUrl: bench.url, smtpUrl: smtp.url, slackToken: slack.token, slackApiUrl: slack.apiUrl, concurrency: CONCURRENCY };
    // Enqueues for an entity that does not exist are refused: the HTTP section needs it too.
    if (runs("e2e") || runs("scaling") || runs("http")) await benchEntity(bench.db);
    if (runs("e2e")) {
      section(`End to end (1 worker process, ${CONCURRENCY} concurrent jobs, entity prefers email and Slack)`);
      const workers = await startWorkers(1, env);
      await waitForWorkers(bench.adminPool, 1);
      const e2e = await sustained(bench.db, bench.adminPool, { seconds, warmupSeconds: quick ? 2 : 5, backlog: 400 });
      await drain(bench.adminPool);
      line(`notifications/s sustained over ${seconds} s`, String(round(e2e.perSec)));
      if (ceiling) line("ratio to the channels-only ceiling (pairs/s)", String(round(e2e.perSec / ceiling.pairsPerSec, 3)));
      if (batched) line("ratio to the raw queue (batched jobs/s)", String(round(e2e.perSec / batched, 4)));
      line("database commits per notification", String(round(e2e.commitsPerNotification)));

      section("Latency at half the sustained rate (enqueue → outcome event)");
      const rate = Math.max(1, e2e.perSec / 2);
      const latency = await latencyAtRate(bench.db, bench.adminPool, { ratePerSec: rate, seconds: quick ? 5 : 15 });
      line("offered rate (notifications/s)", String(round(rate)));
      line("p50 / p95 / p99 (ms)", `${round(latency.p50)} / ${round(latency.p95)} / ${round(latency.p99)}  (${latency.count} notifications)`);
      const slow = await latencyAtRate(bench.db, bench.adminPool, { ratePerSec: 10, seconds: quick ? 5 : 15 });
      line("at 10 notifications/s: p50 / p95 / p99 (ms)", `${round(slow.p50)} / ${round(slow.p95)} / ${round(slow.p99)}  (${slow.count} notifications)`);
      const bytes = await bytesPerNotification(bench.adminPool);
      line("bytes stored per notification (streams + handling)", String(Math.round(bytes)));
      await workers.stop();
      figures.endToEnd = {
        ...e2e,
        ratioToChannelsCeiling: ceiling ? e2e.perSec / ceiling.pairsPerSec : null,
        ratioToRawQueue: batched ? e2e.perSec / batched : null,
      };
      figures.latency = { offeredPerSec: rate, ...latency, at10PerSec: slow };
      tidings = { perSec: e2e.perSec, latencyRate: rate, latency, slow, bytes };
      figures.storage = { bytesPerNotification: bytes };
    }

    if (runs("minimal")) {
      section("Minimal outbox (a row and a job per notification; the job sends both and marks it sent): tidings's yardstick");
      const minimal = await openMinimalOutbox(bench.serverUrl);
      const worker = await startMinimalWorker({ url: minimal.url, smtpUrl: smtp.url, slackToken: slack.token, slackApiUrl: slack.apiUrl, concurrency: CONCURRENCY });
      try {
        const m = await minimalSustained(minimal.pool, { seconds, warmupSeconds: quick ? 2 : 5, backlog: 400 });
        line(`notifications/s sustained over ${seconds} s`, String(round(m.perSec)));
        if (ceiling) line("ratio to the channels-only ceiling (pairs/s)", String(round(m.perSec / ceiling.pairsPerSec, 3)));
        const rate = tidings?.latencyRate ?? Math.max(1, m.perSec / 2);
        const latency = await minimalLatencyAtRate(minimal.pool, { ratePerSec: rate, seconds: quick ? 5 : 15 });
        line(`latency at ${round(rate)}/s: p50 / p95 / p99 (ms)`, `${round(latency.p50)} / ${round(latency.p95)} / ${round(latency.p99)}  (${latency.count} notifications)`);
        const slow = await minimalLatencyAtRate(minimal.pool, { ratePerSec: 10, seconds: quick ? 5 : 15 });
        line("at 10 notifications/s: p50 / p95 / p99 (ms)", `${round(slow.p50)} / ${round(slow.p95)} / ${round(slow.p99)}`);
        const bytes = await minimalBytesPerNotification(minimal.pool);
        line("bytes stored per notification", String(Math.round(bytes)));
        figures.minimalOutbox = { ...m, latency: { offeredPerSec: rate, ...latency }, at10PerSec: slow, bytesPerNotification: bytes };
        if (tidings) {
          section("tidings against the minimal outbox (same run)");
          line("throughput ratio (tidings / minimal)", String(round(tidings.perSec / m.perSec, 3)));
          line("p99 latency ratio at the same rate (tidings / minimal)", String(round(tidings.latency.p99 / latency.p99, 2)));
          line("bytes per notification ratio (tidings / minimal)", String(round(tidings.bytes / bytes, 1)));
          figures.againstMinimalOutbox = {
            throughputRatio: tidings.perSec / m.perSec,
            p99LatencyRatio: tidings.latency.p99 / latency.p99,
            bytesRatio: tidings.bytes / bytes,
          };
        }
      } finally {
        await worker.stop();
        await minimal.close();
      }
    }

    if (runs("scaling")) {
      section("Scaling: 1, 2 and 4 worker processes");
      const scaling: Record<string, number> = {};
      const commitsPerNotification: Record<string, number> = {};
      for (const count of [1, 2, 4]) {
        const workers = await startWorkers(count, env);
        await waitForWorkers(bench.adminPool, count);
        const r = await sustained(bench.db, bench.adminPool, { seconds: scaleSeconds, warmupSeconds: 3, backlog: 400 });
        await drain(bench.adminPool);
        await workers.stop();
        await bench.adminPool.query("delete from tidings.worker_heartbeats");
        scaling[String(count)] = r.perSec;
        commitsPerNotification[String(count)] = r.commitsPerNotification;
        line(
          `${count} worker process(es): notifications/s`,
          `${round(r.perSec)}  (×${round(r.perSec / scaling["1"]!, 2)}; ${round(r.commitsPerNotification)} commits per notification)`,
        );
      }
      figures.scaling = scaling;
      figures.scalingCommitsPerNotification = commitsPerNotification;
    }

    if (runs("http")) {
      section("HTTP enqueue (autocannon, 32 connections) beside a no-op Express route");
      const http = await httpEnqueue(bench, { seconds: quick ? 4 : 10, connections: 32 });
      line("no-op route requests/s, p99 ms", `${round(http.noop.rps)}, ${http.noop.p99}`);
      line("POST /v1/notifications requests/s, p99 ms", `${round(http.enqueue.rps)}, ${http.enqueue.p99}  (non-2xx: ${http.enqueue.non2xx})`);
      line("ratio to the no-op route", String(round(http.enqueue.rps / http.noop.rps, 3)));
      figures.http = { ...http, ratio: http.enqueue.rps / http.noop.rps };
    }

    if (runs("idle")) {
      // Before the audit section: its bulk-loaded records (events with no
      // handling row for their consumers) would give an idle worker work.
      // What tidings costs when nothing happens: the machine's CPU with one
      // worker process waiting (its bots, its catch-up loops, PostgreSQL
      // answering them) beside the same machine without it, measured just before.
      section("Idle: one worker process with nothing to do, beside the machine without it");
      const idleSeconds = quick ? 10 : 30;
      const without = await machineBusy(idleSeconds);
      const workers = await startWorkers(1, env);
      await waitForWorkers(bench.adminPool, 1);
      // What the HTTP section enqueued (with no worker running) is sent first: idle means nothing left to do.
      await drain(bench.adminPool, 600_000);
      await sleep(5_000);
      const commits0 = await commitCount(bench.adminPool);
      const withWorker = await machineBusy(idleSeconds);
      const commits = (await commitCount(bench.adminPool)) - commits0;
      await workers.stop();
      await bench.adminPool.query("delete from tidings.worker_heartbeats");
      line("machine busy without tidings (% of all cores)", String(round(100 * without, 2)));
      line("machine busy with one idle worker (% of all cores)", `${round(100 * withWorker, 2)}  (${round(commits / idleSeconds, 1)} commits/s)`);
      figures.idle = { seconds: idleSeconds, busyWithout: without, busyWithIdleWorker: withWorker, commitsPerSecond: commits / idleSeconds };
    }
    if (runs("audit")) {
      section("Audit query: emails to one address");
      const audit = await auditQuery(bench, auditRows, (m) => process.stdout.write(`${m}\n`));
      for (const r of audit)
        line(
          `${r.rows.toLocaleString("en")} email records`,
          `${round(r.medianMs, 2)} ms median, ${round(r.p95Ms, 2)} ms p95 (${r.matches} rows; loaded in ${round(r.loadSeconds)} s)`,
        );
      figures.audit = audit;
    }
  } finally {
    await smtp.close();
    await slack.close();
    await bench.close();
  }
  const verdicts = targetVerdicts(figures);
  if (verdicts.length > 0) {
    section("Targets (docs/performance.md), judged on this run");
    for (const v of verdicts) line(v.target, `${v.measured}  ${v.met ? "met" : "NOT met"}`);
    figures.targets = verdicts;
  }
  process.stdout.write(`${JSON.stringify(figures)}\n`);
}

main().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`benchmark failed: ${(error as Error).stack}\n`);
    process.exit(1);
  },
);
