/**
 * The database-fault scenarios (PostgreSQL restart, terminated connections):
 * worker processes (src/main.ts) run a flow of notifications, the fault hits
 * mid-flow, and the workers must carry on by themselves. Nothing restarts a
 * worker process that dies: a dead worker fails the scenario at once, with
 * its cause.
 *
 * "Mid-flow" by construction: after a quarter of the emails the SMTP server
 * holds every reply, the fault begins once a send waits on it (so the flow
 * cannot have finished), and the fault itself releases the held sends once it
 * is under way, so their outcomes are recorded through the fault.
 */
import type pg from "pg";
import { createDb, createPool, type Db } from "../../src/db/database";
import { prepareDatabase } from "../../src/db/roles";
import {
  auditHandling,
  auditProblems,
  causeOfDeath,
  checkNotifications,
  countOutcomes,
  complaints,
  deliveries,
  describeHeartbeats,
  describeJobs,
  enqueueMany,
  FLOW_LIMIT_MS,
  idleSurvivors,
  outcomeTally,
  repeatsBeyondHandovers,
  SENT_ON_ALL,
  seedEntities,
  sleep,
  spawnWorker,
  startChannels,
  stopAll,
  stuckFetching,
  waitForQuiet,
  workerEnv,
  type Channels,
  type Crash,
  type NotificationCheck,
  type Query,
  type WorkerProcess,
} from "./faultFlow";
import { startThrowawayPostgres, type ThrowawayPostgres } from "./faultPostgres";

export interface ScenarioResult {
  count: number;
  check: NotificationCheck;
  tally: Record<string, number>;
  auditProblems: string[];
  emailMissing: string[];
  slackMissing: string[];
  /** Emails and posts received that belong to none of the notifications. */
  strangers: string[];
  emailDuplicates: number;
  slackDuplicates: number;
  /** Sends that arrived more often than their hand-overs explain (must be none). */
  repeatsBeyondHandovers: string[];
  /** Outcomes reached when the fault began (fewer than all: a held send's notification cannot have one). */
  outcomesBeforeFault: number;
  /** Sends held at the SMTP server when the fault began, released by the fault. */
  heldAtFault: number;
  /** Emails the SMTP server had accepted when the fault began (a quarter of them: the flow was under way). */
  emailsBeforeFault: number;
  faultDetail: string;
  /** From the start of the fault to the last outcome. */
  recoveryMs: number;
}

/** What a database-fault scenario must show: the fault landed mid-flow, and afterwards every notification was sent and delivered, none lost. */
export function expectRecovered(r: ScenarioResult): void {
  // The fault landed mid-flow (a send was in flight), and released it.
  expect(r.heldAtFault).toBeGreaterThan(0);
  expect(r.outcomesBeforeFault).toBeLessThan(r.count);
  expect(r.check.lost).toEqual([]);
  expect(r.tally).toEqual({ [SENT_ON_ALL]: r.count });
  expect(r.check.unfinished).toEqual([]);
  expect(r.auditProblems).toEqual([]);
  expect(r.emailMissing).toEqual([]);
  expect(r.slackMissing).toEqual([]);
  expect(r.strangers).toEqual([]);
  // A send arrives twice only when a worker could not record it (here: its
  // outcome commit kept failing) and handed it over.
  expect(r.repeatsBeyondHandovers).toEqual([]);
}

/** "a exited (code 1): Error: ..." for each dead worker, for failure messages. */
export function describeCrashes(crashes: readonly Crash[]): string {
  return crashes.map((c) => `${c.worker} exited (${c.exit}): ${c.cause}`).join("\n");
}

interface Env {
  query: Query;
  db: Db;
  url: string;
  channels: Channels;
  workers: WorkerProcess[];
}

async function runFlow(
  env: Env,
  options: {
    label: string;
    count: number;
    workers: number;
    /** Break the database; call `releaseHeld` once the fault is under way (it must, or the flow cannot finish). */
    fault: (releaseHeld: () => number) => Promise<string>;
  },
): Promise<ScenarioResult> {
  const { query, db, channels } = env;
  const entities = await seedEntities(db, options.label);
  // Sends take a while, so the flow is still going during the whole fault.
  channels.smtp.setLatency(20);
  const hold = channels.smtp.holdReplies({ after: options.count / 4 });
  const sent = await enqueueMany(db, { label: options.label, count: options.count, entities });
  const ids = sent.map((s) => s.trackingId);
  const processEnv = workerEnv({ databaseUrl: env.url, channels });
  for (let i = 0; i < options.workers; i++) env.workers.push(spawnWorker(String.fromCharCode(97 + i), processEnv));
  await Promise.all(env.workers.map((w) => w.ready()));
  const heldAtFault = (await hold.waitForHeld(1, FLOW_LIMIT_MS)).length;
  const outcomesBeforeFault = await countOutcomes(query, ids);
  const emailsBeforeFault = channels.smtp.messages.length;
  const faultStarted = Date.now();
  let released = false;
  const faultDetail = await options.fault(() => {
    released = true;
    return hold.release();
  });
  if (!released) throw new Error("the fault never released the held sends");
  const faultEnded = Date.now();
  const crashes = (): Crash[] =>
    env.workers
      .filter((w) => w.child.exitCode !== null || w.child.signalCode !== null)
      .map((w) => ({ worker: w.name, exit: w.child.signalCode ?? `code ${w.child.exitCode}`, cause: causeOfDeath(w.output()) }));
  let reached = 0;
  const deadline = Date.now() + FLOW_LIMIT_MS;
  for (;;) {
    // A dead worker stays dead (nothing restarts it here): say so at once rather than time out.
    if (crashes().length > 0) {
      throw new Error(
        `worker processes died during the fault, so the notifications they held wait for someone to restart them:\n` +
          `${describeCrashes(crashes())}\n(${await countOutcomes(query, ids)} of ${ids.length} notifications reached an outcome)`,
      );
    }
    reached = await countOutcomes(query, ids);
    if (reached === ids.length) break;
    if (Date.now() > deadline) {
      const stuck = [...idleSurvivors(env.workers), ...stuckFetching(env.workers, faultEnded)];
      throw new Error(
        `timed out after ${FLOW_LIMIT_MS} ms: only ${reached} of ${ids.length} notifications reached an outcome` +
          `${stuck.length > 0 ? `\nstuck: ${stuck.join("\n")}` : ""}\njobs left:\n${await describeJobs(query)}` +
          `\nheartbeats:\n${await describeHeartbeats(query)}\nworkers said:\n${env.workers.map((w) => complaints(w)).join("\n")}`,
      );
    }
    await sleep(200);
  }
  const recoveryMs = Date.now() - faultStarted;
  const check = await checkNotifications(query, ids);
  await waitForQuiet(query);
  // Still alive at the end: a worker that died after the last outcome would
  // have left the flow to others in production just the same.
  if (crashes().length > 0) throw new Error(`worker processes died during the fault:\n${describeCrashes(crashes())}`);
  const problems = auditProblems(await auditHandling(query));
  const d = deliveries(channels, sent);
  const repeats = await repeatsBeyondHandovers(query, channels, sent);
  return {
    count: options.count,
    check,
    tally: outcomeTally(check),
    auditProblems: problems,
    emailMissing: d.emailMissing,
    slackMissing: d.slackMissing,
    strangers: d.strangers,
    emailDuplicates: d.emailDuplicates,
    slackDuplicates: d.slackDuplicates,
    repeatsBeyondHandovers: repeats.beyond,
    outcomesBeforeFault,
    heldAtFault,
    emailsBeforeFault,
    faultDetail,
    recoveryMs,
  };
}

/**
 * Scenario 2: a throwaway PostgreSQL (test/fixtures/faultPostgres.ts) is
 * stopped and started again while two worker processes are sending.
 */
export async function runPostgresRestart(options: { count: number }): Promise<ScenarioResult> {
  let server: ThrowawayPostgres | null = null;
  let pool: pg.Pool | null = null;
  let admin: pg.Pool | null = null;
  let db: Db | null = null;
  let channels: Channels | null = null;
  const workers: WorkerProcess[] = [];
  try {
    server = await startThrowawayPostgres();
    // Set up as a user does: migrated as the superuser, served to the service login.
    await prepareDatabase(server.url, { serviceLogin: { user: "tidings_app", password: "fault" } });
    const serviceUrl = new URL(server.url);
    serviceUrl.username = "tidings_app";
    serviceUrl.password = "fault";
    admin = createPool(server.url, 5, "fault-test-admin");
    pool = createPool(serviceUrl.toString(), 5, "fault-test");
    db = createDb(pool);
    const p = admin;
    channels = await startChannels();
    const srv = server;
    return await runFlow(
      { query: (text, values) => p.query(text, values as unknown[]), db, url: serviceUrl.toString(), channels, workers },
      {
        label: "pgr",
        count: options.count,
        workers: 2,
        fault: async (releaseHeld) => {
          const started = Date.now();
          await srv.stop();
          // The held sends are answered while the database is down: recording
          // their outcomes has to wait for it to come back.
          const released = releaseHeld();
          await srv.start();
          return `PostgreSQL stopped and started again in ${Date.now() - started} ms (${released} held sends answered while it was down)`;
        },
      },
    );
  } finally {
    await stopAll(workers);
    await channels?.close();
    await db?.destroy();
    await admin?.end();
    await server?.destroy();
  }
}

/**
 * Scenario 3: every connection of the worker process (application_name
 * "tidings") to the test database is terminated every `everyMs` for
 * `forMs`, mid-flow.
 */
export async function runTerminatedConnections(t: { url: string; db: Db; query: Query }, options: { count: number; everyMs?: number; forMs?: number }): Promise<ScenarioResult> {
  const { everyMs = 200, forMs = 8_000 } = options;
  let channels: Channels | null = null;
  const workers: WorkerProcess[] = [];
  try {
    channels = await startChannels();
    return await runFlow(
      { query: t.query, db: t.db, url: t.url, channels, workers },
      {
        label: "term",
        count: options.count,
        workers: 1,
        fault: async (releaseHeld) => {
          let terminated = 0;
          let rounds = 0;
          let released = 0;
          const until = Date.now() + forMs;
          while (Date.now() < until) {
            const { rows } = await t.query<{ n: number }>(
              `select count(*) filter (where pg_terminate_backend(pid))::int as n from pg_stat_activity
                where datname = current_database() and application_name = 'tidings' and pid <> pg_backend_pid()`,
            );
            terminated += rows[0]!.n;
            rounds += 1;
            // After the first round, the held sends complete and the flow goes
            // on under the terminations.
            if (rounds === 1) released = releaseHeld();
            await sleep(everyMs);
          }
          return `${terminated} worker connections terminated in ${rounds} rounds over ${forMs} ms (${released} held sends released after the first)`;
        },
      },
    );
  } finally {
    await stopAll(workers);
    await channels?.close();
  }
}
