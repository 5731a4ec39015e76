import { sql } from "kysely";
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { HandledInfo } from "../bots/bot";
import type { Db } from "../db/database";
import { allChannels } from "../notification/channels";

/**
 * Prometheus metrics. Counters and the latency histogram are kept by this
 * process (the API counts enqueues; the worker's runner reports every job
 * through `onHandled`); the queue depth and the failed records are read from
 * PostgreSQL, so every process reports the same totals.
 *
 * /metrics needs no key, so a scrape must not cost the database more than
 * a bounded amount however often or however many at once it is asked: the
 * database gauges are refreshed at most once every `databaseRefreshMs`
 * (METRICS_REFRESH_MS), one refresh at a time, and concurrent scrapes share
 * the refresh in flight. (20 scrapers at once, each refreshing, raised
 * authenticated reads from 9 ms to 120 ms.)
 */
export interface TidingsMetrics {
  registry: Registry;
  /** The runner's hook (BotRuntime.onHandled): latency per task, sends per channel. */
  onHandled(info: HandledInfo): void;
  notificationEnqueued(): void;
  /** Long-polls of the feed in progress. */
  feedWaiting: Gauge;
  /** Reads of the feed by the shared long-poll poller. */
  feedPolls: Counter;
  /** Refresh the gauges computed from the database when they are older than the refresh interval, then render everything. */
  render(db: Db): Promise<string>;
  contentType: string;
}

const CHANNEL_OF_STREAM: Record<string, string> = Object.fromEntries(allChannels.map((c) => [c.streams.operations, c.name]));

export function createMetrics(options: { defaultMetrics?: boolean; databaseRefreshMs?: number } = {}): TidingsMetrics {
  // 0 (the default for tests and tools): every scrape refreshes, concurrent ones still share; npm start passes METRICS_REFRESH_MS.
  const refreshMs = options.databaseRefreshMs ?? 0;
  const registry = new Registry();
  if (options.defaultMetrics) collectDefaultMetrics({ register: registry, prefix: "tidings_process_" });

  const enqueued = new Counter({
    name: "tidings_notifications_enqueued_total",
    help: "Notifications enqueued through this process's API (idempotent replays not counted).",
    registers: [registry],
  });
  const sends = new Counter({
    name: "tidings_channel_sends_total",
    help: "Channel sends handled by this process's workers, by channel and outcome (sent, or failed for good).",
    labelNames: ["channel", "outcome"] as const,
    registers: [registry],
  });
  for (const { name } of allChannels) for (const outcome of ["sent", "failed"]) sends.labels(name, outcome).inc(0);
  const handling = new Histogram({
    name: "tidings_job_handling_seconds",
    help: "How long each job of this process's workers took, by task and how it ended.",
    labelNames: ["task", "outcome"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [registry],
  });
  const feedWaiting = new Gauge({
    name: "tidings_feed_long_polls",
    help: "Requests to GET /v1/events waiting for an event in this process.",
    registers: [registry],
  });
  const feedPolls = new Counter({
    name: "tidings_feed_polls_total",
    help: "Reads of the event feed by this process's shared long-poll poller: one per tick while any request waits, however many do.",
    registers: [registry],
  });
  const jobsWaiting = new Gauge({
    name: "tidings_jobs_waiting",
    help: "graphile-worker jobs not yet taken by a worker, by task; due=now can run at once, due=later are retries scheduled for later.",
    labelNames: ["task", "due"] as const,
    registers: [registry],
  });
  const failedRecords = new Gauge({
    name: "tidings_failed_records",
    help: "Records whose handling is Failed (waiting for an operator to re-drive or archive), by stream and concern.",
    labelNames: ["stream", "concern"] as const,
    registers: [registry],
  });
  const readWaiting = new Gauge({
    name: "tidings_read_waiting_records",
    help: "Records gap-safe readers have not reached: reader=horizon, committed records the feed horizon still holds back (a transaction appending to the stream is open); reader=checkpoint:<name>, records past a catch-up bot's cursor (the projection's lag).",
    labelNames: ["reader", "stream"] as const,
    registers: [registry],
  });
  const readLag = new Gauge({
    name: "tidings_read_lag_seconds",
    help: "Age of the oldest record counted in tidings_read_waiting_records (0 when none waits).",
    labelNames: ["reader", "stream"] as const,
    registers: [registry],
  });
  const databaseUp = new Gauge({
    name: "tidings_metrics_database_up",
    help: "1 when the database gauges could be read at their last refresh, 0 when not (they are then left out).",
    registers: [registry],
  });
  const databaseAge = new Gauge({
    name: "tidings_metrics_database_age_seconds",
    help: "Seconds since the database gauges were last refreshed (at most METRICS_REFRESH_MS, plus a refresh's time).",
    registers: [registry],
  });

  // graphile-worker's queue through its public view (graphile_worker.jobs), read as the service itself
  // (it works the queue). Waiting means what the private table calls is_available: not locked by a
  // worker, attempts left. The view runs as its owner, so the private tables' row-level security
  // does not narrow what it shows; the service's SELECT on it comes from grantQueueToService.
  async function refreshDatabaseGauges(db: Db): Promise<void> {
    try {
      const jobs = await sql<{ task: string; now: number; later: number }>`
        select task_identifier as task,
               count(*) filter (where run_at <= now())::int as now,
               count(*) filter (where run_at > now())::int as later
        from graphile_worker.jobs
        where locked_at is null and attempts < max_attempts
        group by task_identifier`.execute(db);
      const failed = await sql<{ stream: string; concern: string; n: number }>`
        select stream, concern, failed::int as n from tidings.failed_handling_counts()`.execute(db);
      const lag = await sql<{ reader: string; stream: string; waiting: number; oldest_seconds: number }>`
        select reader, stream, waiting, oldest_seconds from tidings.read_lag()`.execute(db);
      // Replaced in one synchronous step, so a concurrent scrape never renders half of it.
      jobsWaiting.reset();
      failedRecords.reset();
      readWaiting.reset();
      readLag.reset();
      for (const r of lag.rows) {
        readWaiting.labels(r.reader, r.stream).set(Number(r.waiting));
        readLag.labels(r.reader, r.stream).set(r.oldest_seconds);
      }
      for (const r of jobs.rows) {
        jobsWaiting.labels(r.task, "now").set(r.now);
        jobsWaiting.labels(r.task, "later").set(r.later);
      }
      for (const r of failed.rows) failedRecords.labels(r.stream, r.concern).set(r.n);
      databaseUp.set(1);
    } catch {
      jobsWaiting.reset();
      failedRecords.reset();
      readWaiting.reset();
      readLag.reset();
      databaseUp.set(0);
    }
  }

  let refreshing: Promise<void> | null = null;
  let refreshedAt = -Infinity;

  /** At most one refresh in flight, and none while the last one is fresh enough. */
  async function refreshWhenDue(db: Db): Promise<void> {
    if (!refreshing && performance.now() - refreshedAt >= refreshMs) {
      refreshing = refreshDatabaseGauges(db).finally(() => {
        refreshedAt = performance.now();
        refreshing = null;
      });
    }
    if (refreshing) await refreshing;
    databaseAge.set(Number.isFinite(refreshedAt) ? (performance.now() - refreshedAt) / 1000 : 0);
  }

  return {
    registry,
    feedWaiting,
    feedPolls,
    contentType: registry.contentType,
    notificationEnqueued: () => enqueued.inc(),
    onHandled(info) {
      handling.labels(info.task, info.outcome).observe(info.durationMs / 1000);
      const channel = CHANNEL_OF_STREAM[info.stream];
      if (channel && info.outcome === "completed") sends.labels(channel, "sent").inc();
      if (channel && info.outcome === "failed") sends.labels(channel, "failed").inc();
    },
    async render(db) {
      await refreshWhenDue(db);
      return registry.metrics();
    },
  };
}
