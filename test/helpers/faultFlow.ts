/**
 * Shared pieces of the fault tests (test/fault): channels on loopback,
 * entities that prefer email and Slack, a batch of notifications enqueued
 * through the real enqueue paths, worker processes to start and kill, and
 * the checks that prove, from the streams themselves, that no notification
 * was lost and no record was handled twice.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { sql } from "kysely";
import { inTransaction, type Db } from "../../src/db/database";
import { putEntity } from "../../src/entities/entity.repository";
import { enqueueNotification } from "../../src/notification/enqueue";
import { createTestDatabase, waitFor, type TestDatabase } from "./db";
import { startSlackStandIn, type RecordedPost, type SlackStandIn } from "./slackStandIn";
import { startSmtpServer, type ReceivedMessage, type TestSmtpServer } from "./smtpServer";
import { OUTCOME_TYPES, person } from "./tidings";

export const ROOT = path.resolve(__dirname, "../..");

/**
 * The bound on any wait for the flow to get somewhere (a send held, every
 * outcome in, a worker started). Generous, so a machine loaded many times
 * over still passes: reaching it is a failure with a message, never what
 * decides what a test tests. Test timeouts are TEST_TIMEOUT_MS.
 */
export const FLOW_LIMIT_MS = 120_000;
export const TEST_TIMEOUT_MS = 300_000;

/** The outcome type that means "delivered on every channel". */
export const SENT_ON_ALL = "SentOnAllPreparedChannelsEvent";

/** How the checks read the streams (as the superuser, past every role): a pg pool's or a test database's `query`. */
export type Query = <R extends Record<string, unknown> = Record<string, unknown>>(text: string, values?: unknown[]) => Promise<{ rows: R[] }>;

export interface Channels {
  smtp: TestSmtpServer;
  slack: SlackStandIn;
  close(): Promise<void>;
}

export async function startChannels(): Promise<Channels> {
  const smtp = await startSmtpServer();
  const slack = await startSlackStandIn();
  return {
    smtp,
    slack,
    async close() {
      await Promise.all([smtp.close(), slack.close()]);
    },
  };
}

/** Entities `<prefix>-<i>` that prefer email and Slack, delivery on both. */
export async function seedEntities(db: Db, prefix: string, count = 8): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = `${prefix}-${i}`;
    await putEntity(db, id, person({ name: `Fault ${prefix} ${i}`, email: `${id}@example.test`, slack: `U0FLT${String(i).padStart(4, "0")}` }), "fault-test");
    ids.push(id);
  }
  return ids;
}

export interface SentNotification {
  trackingId: string;
  /** A string only this notification's subject (hence its email and Slack post) contains. */
  marker: string;
  messageId: string;
}

/**
 * Enqueue `count` notifications spread over the entities: even ones through
 * the TypeScript enqueue, odd ones through the SQL function
 * `notification.send_notification_to_entity`, each with a unique marker.
 */
export async function enqueueMany(db: Db, options: { label: string; count: number; entities: string[] }): Promise<SentNotification[]> {
  const sent: SentNotification[] = [];
  for (let i = 0; i < options.count; i++) {
    const marker = `[fault:${options.label}:${i}]`;
    const entityId = options.entities[i % options.entities.length]!;
    const subject = `Report ${marker}`;
    const text = `Hello ${marker}, this notification must arrive exactly once.`;
    let trackingId: string;
    if (i % 2 === 0) {
      trackingId = (await enqueueNotification(db, { entityId, subject, text })).trackingId;
    } else {
      // As a service enqueueing in SQL does (its login acting as the client).
      const { rows } = await inTransaction(db, "client", (tx) =>
        sql<{ id: string }>`select notification.send_notification_to_entity(${entityId}, ${subject}, ${text}) as id`.execute(tx),
      );
      trackingId = rows[0]!.id;
    }
    sent.push({ trackingId, marker, messageId: `<${trackingId}.email@tidings>` });
  }
  return sent;
}

/** How many of these notifications have an outcome event on notification.events. */
export async function countOutcomes(query: Query, ids: readonly string[]): Promise<number> {
  const { rows } = await query<{ n: number }>(`select count(distinct id)::int as n from notification.events where type = any($1::text[]) and id = any($2::text[])`, [
    OUTCOME_TYPES,
    ids,
  ]);
  return rows[0]!.n;
}

/** Wait (bounded) until every notification has an outcome; the error says how many are missing. */
export async function waitForAllOutcomes(query: Query, ids: readonly string[], timeoutMs: number): Promise<void> {
  let last = 0;
  try {
    await waitFor(
      async () => {
        last = await countOutcomes(query, ids);
        return last === ids.length;
      },
      { timeoutMs, intervalMs: 200, what: `outcomes of ${ids.length} notifications` },
    );
  } catch (error) {
    const jobs = await describeJobs(query).catch((e) => `(job queue unreadable: ${String(e)})`);
    throw new Error(`${(error as Error).message}: only ${last} of ${ids.length} reached an outcome; jobs left:\n${jobs}`, { cause: error });
  }
}

/** What arrived at the receiving side: a fixture's channels, or several SMTP servers' messages put together. */
export interface Received {
  smtp: { readonly messages: readonly ReceivedMessage[] };
  slack: { readonly posts: readonly RecordedPost[] };
}

/** Count emails (by Message-ID) and Slack posts (by marker) at the receiving side. */
export function deliveries(channels: Received, sent: readonly SentNotification[]) {
  const emails = new Map<string, number>();
  for (const m of channels.smtp.messages) if (m.messageId) emails.set(m.messageId, (emails.get(m.messageId) ?? 0) + 1);
  const markerOf = /\[fault:[a-z0-9-]+:\d+\]/;
  const posts = new Map<string, number>();
  for (const p of channels.slack.posts) {
    const marker = markerOf.exec(p.text)?.[0];
    if (marker) posts.set(marker, (posts.get(marker) ?? 0) + 1);
  }
  let emailDuplicates = 0;
  let slackDuplicates = 0;
  const emailMissing: string[] = [];
  const slackMissing: string[] = [];
  for (const s of sent) {
    const e = emails.get(s.messageId) ?? 0;
    const p = posts.get(s.marker) ?? 0;
    if (e === 0) emailMissing.push(s.trackingId);
    if (p === 0) slackMissing.push(s.trackingId);
    emailDuplicates += Math.max(0, e - 1);
    slackDuplicates += Math.max(0, p - 1);
  }
  // Anything received that belongs to none of these notifications (an alert,
  // or a resend under another id): must be nothing in these tests.
  const ids = new Set(sent.map((s) => s.messageId));
  const markers = new Set(sent.map((s) => s.marker));
  const strangers = [
    ...channels.smtp.messages.filter((m) => !m.messageId || !ids.has(m.messageId)).map((m) => `email ${m.messageId} to ${m.to.join(", ")}: ${m.subject}`),
    ...channels.slack.posts.filter((p) => !markers.has(markerOf.exec(p.text)?.[0] ?? "")).map((p) => `slack post to ${p.requestedChannel}: ${p.text.slice(0, 80)}`),
  ];
  return { emails, posts, emailDuplicates, slackDuplicates, emailMissing, slackMissing, strangers };
}

/** The email and Slack operations (tracking id → attempt) that have this handling status now. */
async function operationsIn(query: Query, ids: readonly string[], status: string): Promise<{ email: Map<string, number>; slack: Map<string, number> }> {
  const { rows } = await query<{ channel: "email" | "slack"; id: string; attempts: number }>(
    `select 'email' as channel, o.id, h.attempts from email.operations o
       join email.operations__handling h on h.position = o.position and h.concern = 'email_bot'
      where o.id = any($1::text[]) and h.status::text = $2
     union all
     select 'slack', o.id, h.attempts from slack.operations o
       join slack.operations__handling h on h.position = o.position and h.concern = 'slack_bot'
      where o.id = any($1::text[]) and h.status::text = $2`,
    [ids, status],
  );
  const of = (channel: "email" | "slack") => new Map(rows.filter((r) => r.channel === channel).map((r) => [r.id, r.attempts]));
  return { email: of("email"), slack: of("slack") };
}

/** Where things stood when a worker process died, once nothing of it could still act. */
export interface DeathSnapshot {
  worker: string;
  /** Tracking ids whose email / Slack operation was Completed (→ its attempt): none of them may be sent again. */
  completed: { email: Map<string, number>; slack: Map<string, number> };
  /**
   * Tracking ids whose operation was Running (→ the attempt): the sends in
   * doubt, each attempt handed over with one `cancel` (abandoned) by a later
   * worker (maybe not the next one: a worker killed within the lease never
   * took the previous one's jobs).
   */
  running: { email: Map<string, number>; slack: Map<string, number> };
  /** Emails received so far per tracking id (by Message-ID), the dead worker's held replies released. */
  emails: Map<string, number>;
}

/**
 * After a worker died (killed, or by its own hand), before anything else
 * runs: wait until nothing of it can still act, then read where every channel
 * operation stood, release the replies held for it, and count the emails
 * received. Nothing of it can still act once its database sessions have ended
 * (a COMMIT it sent just before dying is then applied or gone) and the SMTP
 * server has seen every one of its connections close (no message of its is
 * still on the way). Only the test's own sessions (application_name
 * tidings-test) may remain, so no other worker may be running.
 */
export async function settleAfterDeath(
  fixture: { query: Query; channels: Channels },
  worker: WorkerProcess,
  ids: readonly string[],
  sent: readonly SentNotification[],
  release: () => void = () => {},
): Promise<DeathSnapshot> {
  const { query, channels } = fixture;
  await worker.exited;
  await waitFor(
    async () => {
      const { rows } = await query<{ n: number }>(
        `select count(*)::int as n from pg_stat_activity
          where datname = current_database() and backend_type = 'client backend'
            and pid <> pg_backend_pid() and application_name is distinct from 'tidings-test'`,
      );
      return rows[0]!.n === 0;
    },
    { timeoutMs: 30_000, intervalMs: 20, what: `the database sessions of ${worker.name} to end` },
  );
  await waitFor(async () => (await channels.smtp.openConnections()) === 0, {
    timeoutMs: 30_000,
    intervalMs: 20,
    what: `the SMTP connections of ${worker.name} to close`,
  });
  const completed = await operationsIn(query, ids, "Completed");
  const running = await operationsIn(query, ids, "Running");
  release();
  const byMessageId = deliveries(channels, sent).emails;
  const emails = new Map(sent.map((s) => [s.trackingId, byMessageId.get(s.messageId) ?? 0]));
  return { worker: worker.name, completed, running, emails };
}

/** Repeats counted at the receiving side, and the sends in doubt that explain them. */
export interface RepeatAccount {
  emailRepeats: number;
  slackRepeats: number;
  /** Emails a dead worker delivered without recording it: each must arrive exactly once more. */
  emailsDeliveredInDoubt: number;
  /** Attempts found Running at the deaths (one counted once however many deaths found it). */
  inDoubt: { email: number; slack: number };
  /** Per tracking id, how many times its email must have arrived: once, plus once per death that delivered it in doubt. */
  expectedEmails: Map<string, number>;
}

/** How many distinct attempts of this operation the deaths found Running. */
function attemptsInDoubt(deaths: readonly DeathSnapshot[], channel: "email" | "slack", id: string): number {
  return new Set(deaths.filter((death) => death.running[channel].has(id)).map((death) => death.running[channel].get(id))).size;
}

/**
 * The exact account of repeated sends across worker deaths (`deaths` in
 * order; the last worker then finished the flow). For every notification's
 * email: each worker delivered it at most once; a worker never delivered it
 * after an earlier death found it Completed; a delivery that a dead worker had
 * not recorded Completed belonged to an operation Running at its death; the
 * final count is 1 plus the number of such deliveries (each is repeated once
 * more, with the same Message-ID, and nothing else is repeated). For every
 * Slack post: it arrived at least once, and at most once more per death at
 * which its operation was Running (only a bound: a Slack post has no
 * idempotency key, and a worker may one day find an in-doubt post in the
 * channel instead of posting again).
 */
export function expectRepeatsExplained(deaths: readonly DeathSnapshot[], received: Received, sent: readonly SentNotification[]): RepeatAccount {
  const d = deliveries(received, sent);
  const problems: string[] = [];
  let emailsDeliveredInDoubt = 0;
  const expectedEmails = new Map<string, number>();
  for (const s of sent) {
    const id = s.trackingId;
    let before = 0;
    let expected = 1;
    deaths.forEach((death, k) => {
      const now = death.emails.get(id) ?? 0;
      const delivered = now - before;
      if (delivered < 0 || delivered > 1) problems.push(`${id}: ${death.worker} delivered its email ${delivered} times`);
      if (k > 0 && deaths[k - 1]!.completed.email.has(id) && delivered !== 0) {
        problems.push(`${id}: ${death.worker} sent an email already Completed when ${deaths[k - 1]!.worker} died`);
      }
      if (delivered === 1 && !death.completed.email.has(id)) {
        expected += 1;
        emailsDeliveredInDoubt += 1;
        if (!death.running.email.has(id)) problems.push(`${id}: ${death.worker} delivered an email it had not claimed (not Running at its death)`);
      }
      before = now;
    });
    const last = deaths.at(-1);
    const total = d.emails.get(s.messageId) ?? 0;
    if (last && total - before !== (last.completed.email.has(id) ? 0 : 1)) {
      problems.push(`${id}: the last worker delivered its email ${total - before} times (Completed at the last death: ${last.completed.email.has(id)})`);
    }
    if (total !== expected) problems.push(`${id}: email received ${total} times, expected ${expected}`);
    expectedEmails.set(id, expected);
    const posts = d.posts.get(s.marker) ?? 0;
    const doubts = attemptsInDoubt(deaths, "slack", id);
    if (posts < 1 || posts > 1 + doubts) problems.push(`${id}: Slack post received ${posts} times, ${doubts} attempts in doubt`);
  }
  expect(problems).toEqual([]);
  const inDoubt = (channel: "email" | "slack") => sent.reduce((n, s) => n + attemptsInDoubt(deaths, channel, s.trackingId), 0);
  return {
    emailRepeats: d.emailDuplicates,
    slackRepeats: d.slackDuplicates,
    emailsDeliveredInDoubt,
    inDoubt: { email: inDoubt("email"), slack: inDoubt("slack") },
    expectedEmails,
  };
}

/**
 * The `cancel` actions in the handling history of these notifications'
 * channel operations: `channel id: N cancels, M abandoned` (abandoned: "…was
 * abandoned before recording an outcome", the hand-over of a send a dead
 * worker left Running), per operation that has any.
 */
export async function cancelsInHistory(query: Query, ids: readonly string[]): Promise<Array<{ channel: "email" | "slack"; id: string; cancels: number; abandoned: number }>> {
  const { rows } = await query<{ channel: "email" | "slack"; id: string; cancels: number; abandoned: number }>(
    `select 'email' as channel, o.id, count(*)::int as cancels,
            count(*) filter (where x.reason like '%was abandoned before recording an outcome%')::int as abandoned
       from email.operations o join email.operations__handling_history x on x.position = o.position
      where o.id = any($1::text[]) and x.concern = 'email_bot' and x.action = 'cancel' group by o.id
     union all
     select 'slack', o.id, count(*)::int, count(*) filter (where x.reason like '%was abandoned before recording an outcome%')::int
       from slack.operations o join slack.operations__handling_history x on x.position = o.position
      where o.id = any($1::text[]) and x.concern = 'slack_bot' and x.action = 'cancel' group by o.id`,
    [ids],
  );
  return rows;
}

/**
 * Sends that arrived more often than their hand-overs explain. A send can
 * arrive twice only if a worker left it Running (it died, or could not
 * record the outcome and gave the job back), and the next run of the job
 * then hands it over with an "abandoned" cancel: so at most 1 + that many
 * times. Read from the history, so it holds whatever else ran meanwhile.
 */
export async function repeatsBeyondHandovers(
  query: Query,
  received: Received,
  sent: readonly SentNotification[],
): Promise<{ beyond: string[]; handedOver: { email: number; slack: number } }> {
  const d = deliveries(received, sent);
  const cancels = await cancelsInHistory(
    query,
    sent.map((s) => s.trackingId),
  );
  const handovers = (channel: "email" | "slack", id: string) => cancels.find((c) => c.channel === channel && c.id === id)?.abandoned ?? 0;
  const beyond: string[] = [];
  for (const s of sent) {
    const emails = d.emails.get(s.messageId) ?? 0;
    const posts = d.posts.get(s.marker) ?? 0;
    if (emails > 1 + handovers("email", s.trackingId)) beyond.push(`email ${s.trackingId} received ${emails} times, handed over ${handovers("email", s.trackingId)}`);
    if (posts > 1 + handovers("slack", s.trackingId)) beyond.push(`Slack post ${s.trackingId} received ${posts} times, handed over ${handovers("slack", s.trackingId)}`);
  }
  return {
    beyond,
    handedOver: { email: cancels.filter((c) => c.channel === "email" && c.abandoned > 0).length, slack: cancels.filter((c) => c.channel === "slack" && c.abandoned > 0).length },
  };
}

/**
 * Every operation Running at a death was handed over exactly once: one
 * `cancel` ("…was abandoned before recording an outcome") in its history per
 * attempt that a death found Running, and no other cancel.
 */
export async function expectHandoversExplained(query: Query, deaths: readonly DeathSnapshot[], ids: readonly string[]): Promise<void> {
  const found = (await cancelsInHistory(query, ids)).map((r) => `${r.channel} ${r.id}: ${r.cancels} cancels, ${r.abandoned} abandoned`).sort();
  const expected: string[] = [];
  for (const channel of ["email", "slack"] as const) {
    for (const id of ids) {
      // One hand-over per attempt left Running, however many deaths found it so.
      const n = attemptsInDoubt(deaths, channel, id);
      if (n > 0) expected.push(`${channel} ${id}: ${n} cancels, ${n} abandoned`);
    }
  }
  expect(found).toEqual(expected.sort());
}

export interface NotificationCheck {
  /** Outcome type of each notification that has one. */
  outcomes: Map<string, string>;
  /** Notifications with no outcome event at all. */
  lost: string[];
  /** Channel operations not Completed or Failed: `stream position concern status`. */
  unfinished: string[];
}

/**
 * Read, from the streams, where each notification ended: its outcome event
 * and the handling status of its channel operations (an operation without a
 * handling row was never claimed: AvailableByDefault).
 */
export async function checkNotifications(query: Query, ids: readonly string[]): Promise<NotificationCheck> {
  const { rows: outcomeRows } = await query<{ id: string; type: string }>(
    `select distinct on (id) id, type from notification.events
     where type = any($1::text[]) and id = any($2::text[]) order by id, position desc`,
    [OUTCOME_TYPES, ids],
  );
  const outcomes = new Map(outcomeRows.map((r) => [r.id, r.type]));
  const lost = ids.filter((id) => !outcomes.has(id));
  const { rows } = await query<{ stream: string; position: number; concern: string; status: string }>(
    `select 'email.operations' as stream, o.position::int, 'email_bot' as concern, coalesce(h.status::text, 'AvailableByDefault') as status
       from email.operations o left join email.operations__handling h on h.position = o.position and h.concern = 'email_bot'
      where o.id = any($1::text[])
     union all
     select 'slack.operations', o.position::int, 'slack_bot', coalesce(h.status::text, 'AvailableByDefault')
       from slack.operations o left join slack.operations__handling h on h.position = o.position and h.concern = 'slack_bot'
      where o.id = any($1::text[])`,
    [ids],
  );
  const unfinished: string[] = [];
  for (const r of rows) {
    if (r.status !== "Completed" && r.status !== "Failed") unfinished.push(`${r.stream} ${r.position} ${r.concern} ${r.status}`);
  }
  return { outcomes, lost, unfinished };
}

/** Tally of outcome types, e.g. { SentOnAllPreparedChannelsEvent: 250 }. */
export function outcomeTally(check: NotificationCheck): Record<string, number> {
  const tally: Record<string, number> = {};
  for (const type of check.outcomes.values()) tally[type] = (tally[type] ?? 0) + 1;
  return tally;
}

/**
 * Jobs held by a worker or due within `withinS` seconds: work about to be
 * done (later retries and saga deadlines excluded).
 */
export async function pendingJobs(query: Query, withinS = 10): Promise<number> {
  const { rows } = await query<{ n: number }>(
    `select count(*)::int as n from graphile_worker.jobs
      where (run_at <= now() + make_interval(secs => $1) or locked_at is not null) and attempts < max_attempts`,
    [withinS],
  );
  return rows[0]!.n;
}

/** The job queue in a few lines, for failure messages: what is left, why, and when it runs. */
export async function describeJobs(query: Query): Promise<string> {
  const { rows } = await query<{ task: string; attempts: number; locked: boolean; runs_in_s: number; n: number; last_error: string | null }>(
    `select j.task_identifier as task, j.attempts, j.locked_at is not null as locked,
            greatest(0, round(extract(epoch from j.run_at - now())))::int as runs_in_s, count(*)::int as n,
            min(left(j.last_error, 120)) as last_error
       from graphile_worker.jobs j
      group by 1, 2, 3, 4 order by 1, 2, 3, 4 limit 40`,
  );
  if (rows.length === 0) return "job queue empty";
  return rows
    .map((r) => `${r.n} × ${r.task} attempts=${r.attempts}${r.locked ? " locked" : ""} runs in ${r.runs_in_s} s${r.last_error ? ` (last error: ${r.last_error})` : ""}`)
    .join("\n");
}

/**
 * Wait (bounded) until the workers have nothing left to do now or in the next
 * few seconds (short retries included), so the audit sees the end state.
 */
export async function waitForQuiet(query: Query, timeoutMs = 30_000): Promise<void> {
  let last = 0;
  try {
    await waitFor(async () => (last = await pendingJobs(query)) === 0, { timeoutMs, intervalMs: 200, what: "the job queue to drain" });
  } catch (error) {
    const jobs = await describeJobs(query).catch((e) => `(job queue unreadable: ${String(e)})`);
    throw new Error(`${(error as Error).message}: ${last} jobs still due or locked:\n${jobs}`, { cause: error });
  }
}

export type HandlingAuditRow = {
  stream: string;
  concern: string;
  position: number;
  status: string;
  claims: number;
  completes: number;
  /** fail + self_cancel + cancel: each one justifies one more claim. */
  retries: number;
  cancels: number;
  /** Seconds until the job queued for it runs (0 when due; a saga's deadline, a retry), or null when none waits. */
  scheduledInS: number | null;
};

/**
 * Every (record, consuming concern) of every declared stream, with its
 * handling status and how often it was claimed and completed, according to
 * the append-only handling history (`handle`, a claim and a completion in one
 * step, counts as both).
 */
export async function auditHandling(query: Query): Promise<HandlingAuditRow[]> {
  const { rows: consumers } = await query<{ stream: string; concern: string; record_types: string[] | null }>(
    `select stream, concern, record_types from tidings.stream_consumers order by stream, concern`,
  );
  const all: HandlingAuditRow[] = [];
  for (const c of consumers) {
    if (!/^[a-z_]+\.[a-z_]+$/.test(c.stream)) throw new Error(`unexpected stream name ${c.stream}`);
    const { rows } = await query<HandlingAuditRow>(
      `select $1::text as stream, $2::text as concern, n.position::int as position,
              coalesce(h.status::text, 'AvailableByDefault') as status,
              (select count(*)::int from ${c.stream}__handling_history x where x.position = n.position and x.concern = $2 and x.action in ('claim', 'handle')) as claims,
              (select count(*)::int from ${c.stream}__handling_history x where x.position = n.position and x.concern = $2 and x.action in ('complete', 'handle')) as completes,
              (select count(*)::int from ${c.stream}__handling_history x where x.position = n.position and x.concern = $2 and x.action in ('fail', 'self_cancel', 'cancel')) as retries,
              (select count(*)::int from ${c.stream}__handling_history x where x.position = n.position and x.concern = $2 and x.action = 'cancel') as cancels,
              (select greatest(0, min(extract(epoch from j.run_at - now())))::float8 from graphile_worker._private_jobs j
                 join graphile_worker._private_tasks k on k.id = j.task_id
                where k.identifier = $1 || ':' || $2 and (j.payload->>'position')::bigint = n.position
                  and j.locked_at is null and j.attempts < j.max_attempts) as "scheduledInS"
         from ${c.stream} n
         left join ${c.stream}__handling h on h.position = n.position and h.concern = $2
        where $3::text[] is null or n.type = any($3::text[])
        order by n.position`,
      [c.stream, c.concern, c.record_types],
    );
    all.push(...rows);
  }
  return all;
}

/** A retry this soon is work in progress, not work lost (graphile-worker backs off e^attempts seconds). */
export const SOON_S = 120;

/**
 * What is wrong with an audit: a record handled twice for one concern
 * (two completes), an extra claim no retry explains, or work left
 * unfinished with nothing due to finish it. The saga record itself
 * legitimately waits, with a job scheduled, for its deadline even after the
 * channel events decided the outcome; a record whose retry is scheduled
 * within SOON_S seconds is still on its way.
 */
export function auditProblems(rows: readonly HandlingAuditRow[]): string[] {
  const problems: string[] = [];
  for (const r of rows) {
    const where = `${r.stream} position ${r.position} concern ${r.concern}`;
    const waiting = r.status !== "Running" && r.scheduledInS !== null;
    const waitingForDeadline = waiting && r.stream === "notification.sagas";
    const retryingSoon = waiting && r.scheduledInS! <= SOON_S;
    if (r.status !== "Completed" && r.status !== "Failed" && !waitingForDeadline && !retryingSoon) {
      problems.push(`${where}: left ${r.status}${r.scheduledInS === null ? " with no job to handle it" : ` until a job in ${Math.round(r.scheduledInS)} s`}`);
    }
    if (r.completes > 1) problems.push(`${where}: completed ${r.completes} times`);
    if (r.status === "Completed" && r.completes !== 1) problems.push(`${where}: Completed with ${r.completes} complete actions`);
    if (r.claims > 1 + r.retries) problems.push(`${where}: claimed ${r.claims} times with only ${r.retries} retries`);
  }
  return problems;
}

// ---------------------------------------------------------------------------
// Worker processes
// ---------------------------------------------------------------------------

export interface WorkerProcess {
  child: ChildProcess;
  name: string;
  /** Everything it printed so far (stdout and stderr). */
  output(): string;
  /** Resolves when the worker logged that it started. */
  ready(timeoutMs?: number): Promise<void>;
  /** Resolves with the exit code or signal. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL and wait for the exit. */
  kill(): Promise<void>;
  /** SIGTERM (graceful) and wait, SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
}

/** The environment of a worker-only tidings process on loopback. */
export function workerEnv(options: { databaseUrl: string; channels: Channels; extra?: Record<string, string> }): NodeJS.ProcessEnv {
  const { databaseUrl, channels } = options;
  // The channels retry on a short schedule here (BOT_MAX_ATTEMPTS attempts,
  // 100 ms doubling to 2 s), not the production one of hours.
  const attempts = Number(options.extra?.BOT_MAX_ATTEMPTS ?? 10);
  const schedule = attempts <= 1 ? "none" : Array.from({ length: attempts - 1 }, (_, i) => `${Math.min(100 * 2 ** i, 2000)}ms`).join(",");
  return {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    NODE_ENV: "test",
    DATABASE_URL: databaseUrl,
    RUN_API: "false",
    RUN_WORKER: "true",
    SMTP_URL: channels.smtp.url,
    // A held reply ends when the test releases it (or the worker dies), never by the client's own timeout on a loaded machine.
    SMTP_SOCKET_TIMEOUT_MS: "600000",
    EMAIL_FROM: "tidings <tidings@example.test>",
    // The fault tests name each email by its Message-ID, <tracking-id.email@tidings>.
    EMAIL_MESSAGE_ID_DOMAIN: "tidings",
    SLACK_BOT_TOKEN: channels.slack.token,
    SLACK_API_URL: channels.slack.apiUrl,
    INTERNAL_TEAM_EMAIL: "oncall@example.test",
    WORKER_LEASE_MS: "2000",
    WORKER_POLL_INTERVAL_MS: "200",
    BOT_RETRY_BASE_MS: "100",
    BOT_RETRY_MAX_MS: "2000",
    BOT_MAX_ATTEMPTS: "10",
    EMAIL_RETRY_SCHEDULE: schedule,
    SLACK_RETRY_SCHEDULE: schedule,
    WORKER_CONCURRENCY: "8",
    DB_POOL_SIZE: "12",
    LOG_LEVEL: "info",
    // Never inherit the developer's .env: every setting comes from here.
    DOTENV_CONFIG_PATH: "/nonexistent/.env",
    ...options.extra,
  };
}

/**
 * Start a worker process: `node --import tsx <entry>` (src/main.ts by
 * default: the real process). Ready when it logs "workers started".
 */
export function spawnWorker(name: string, env: NodeJS.ProcessEnv, entry = "src/main.ts"): WorkerProcess {
  const child = spawn(process.execPath, ["--import", "tsx", path.resolve(ROOT, entry)], {
    cwd: ROOT,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let text = "";
  // Keep the tail only: a worker at info level logs every failure it recovers from.
  const append = (d: Buffer) => {
    text += String(d);
    if (text.length > 2_000_000) text = text.slice(-1_000_000);
  };
  child.stdout.on("data", append);
  child.stderr.on("data", append);
  // "close", not "exit": the process is gone *and* everything it printed has
  // been read (a line written just before a SIGKILL may still sit in the pipe
  // at "exit"), and its pipes are closed, so nothing of it outlives the test.
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once("close", (code, signal) => resolve({ code, signal })));
  let gone = false;
  void exited.then(() => (gone = true));
  const self: WorkerProcess = {
    child,
    name,
    output: () => text,
    exited,
    async ready(timeoutMs = 60_000) {
      await waitFor(
        async () => {
          if (gone) throw new Error(`worker ${name} exited before starting:\n${text.slice(-3000)}`);
          return text.includes('"msg":"workers started"');
        },
        { timeoutMs, intervalMs: 50, what: `worker ${name} to start` },
      );
    },
    async kill() {
      if (!gone) child.kill("SIGKILL");
      await exited;
    },
    async stop(graceMs = 10_000) {
      if (gone) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
  return self;
}

/** Stop every worker still running (afterAll), killing the stubborn ones. */
export async function stopAll(workers: readonly WorkerProcess[]): Promise<void> {
  await Promise.all(workers.map((w) => w.stop(5_000)));
}

export interface Crash {
  worker: string;
  exit: string;
  /** The last line that looks like the cause (an uncaught error), for the report. */
  cause: string;
}

/** The line of a dead worker's output that says why it died. */
export function causeOfDeath(output: string): string {
  const lines = output.trim().split("\n");
  const thrown = [...lines].reverse().find((l) => !/^\s*at /.test(l) && /\b(\w*Error|error): /.test(l));
  return (thrown ?? lines.at(-1) ?? "").trim().slice(0, 300);
}

/**
 * Worker processes still running whose graphile-worker pool logged that it
 * could not record a job's completion or failure (after which the pool shuts
 * itself down) and that did not log a new pool since: the likely reason a
 * flow stalls while every process is alive (heart-beating, so nobody takes
 * their jobs over, yet doing no work). A hint for failure messages.
 */
export function idleSurvivors(workers: readonly WorkerProcess[]): string[] {
  const found: string[] = [];
  for (const w of workers) {
    if (w.child.exitCode !== null || w.child.signalCode !== null) continue;
    const output = w.output();
    const failures = [...output.matchAll(/"msg":"(Failed to (?:complete|fail) jobs[^"]{0,160})/g)];
    const fatal = failures.at(-1);
    if (fatal && !output.slice(fatal.index).includes('"msg":"worker pool restarted"')) {
      found.push(
        `${w.name} is alive and heart-beating, but its graphile-worker pool shut down after "${fatal[1]!.replace(/\\n/g, " ")}": ` +
          `unless the pool is restarted it does no more work, and the jobs it held stay locked since its heartbeat keeps the lease from freeing them`,
      );
    }
  }
  return found;
}

/**
 * Live worker processes whose graphile-worker pool still fails every fetch
 * long after the fault ended (at least 10 failures logged since `sinceMs`,
 * the last one in the final 2 s): a pool that will not recover by itself.
 */
export function stuckFetching(workers: readonly WorkerProcess[], sinceMs: number): string[] {
  const found: string[] = [];
  for (const w of workers) {
    if (w.child.exitCode !== null || w.child.signalCode !== null) continue;
    let failures = 0;
    let last: { time: number; msg: string } | null = null;
    for (const line of w.output().split("\n")) {
      if (!line.includes('"msg":"Error occurred fetching jobs')) continue;
      const time = Number(/"time":(\d+)/.exec(line)?.[1] ?? 0);
      if (time < sinceMs) continue;
      failures += 1;
      last = { time, msg: /"msg":"((?:[^"\\]|\\.){0,200})/.exec(line)?.[1] ?? "" };
    }
    if (last && failures >= 10 && Date.now() - last.time < 2_000) {
      found.push(
        `${w.name} is alive but its graphile-worker pool has failed every fetch since the fault ended (${failures} times, ` +
          `latest "${last.msg}"), so it runs no job and is not replaced`,
      );
    }
  }
  return found;
}

/**
 * What a worker complained about (its warn and error log lines), distinct
 * messages with counts, most recent last: for failure messages.
 */
export function complaints(w: WorkerProcess, max = 12): string {
  const counts = new Map<string, number>();
  for (const line of w.output().split("\n")) {
    const level = /"level":(\d+)/.exec(line)?.[1];
    if (!level || Number(level) < 40) continue;
    const msg = (/"msg":"((?:[^"\\]|\\.){0,140})/.exec(line)?.[1] ?? line.slice(0, 140)).replace(/\\n/g, " ");
    // Re-inserted so the map keeps the order of each message's latest occurrence.
    const n = (counts.get(msg) ?? 0) + 1;
    counts.delete(msg);
    counts.set(msg, n);
  }
  const lines = [...counts].slice(-max).map(([msg, n]) => `  ${n} × ${msg}`);
  return `${w.name} (${w.child.exitCode === null && w.child.signalCode === null ? "running" : "exited"}):\n${lines.join("\n") || "  nothing"}`;
}

/** Heartbeats and the jobs locked by the pools they vouch for, for failure messages. */
export async function describeHeartbeats(query: Query): Promise<string> {
  const { rows } = await query<{ pid: number; age_s: number; pools: string[]; locked: number }>(
    `select h.pid, round(extract(epoch from now() - h.heartbeat_at))::int as age_s, h.worker_ids as pools,
            (select count(*)::int from graphile_worker.jobs j where j.locked_by = any(h.worker_ids)) as locked
       from tidings.worker_heartbeats h order by h.started_at`,
  );
  return rows.map((r) => `pid ${r.pid}: beat ${r.age_s} s ago, pools [${r.pools.join(", ")}], ${r.locked} jobs locked by them`).join("\n") || "no heartbeats";
}

/** The handling history of one notification's email or Slack operation, oldest first. */
export async function channelHistory(query: Query, stream: "email.operations" | "slack.operations", trackingId: string) {
  const concern = stream === "email.operations" ? "email_bot" : "slack_bot";
  const { rows } = await query<{ action: string; to_status: string; reason: string | null; attempt: number; recorded_at: Date }>(
    `select h.action, h.to_status::text, h.reason, h.attempt, h.recorded_at
       from ${stream}__handling_history h join ${stream} o on o.position = h.position
      where o.id = $1 and h.concern = $2 order by h.entry`,
    [trackingId, concern],
  );
  return rows;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export interface FaultFixture {
  readonly t: TestDatabase;
  readonly channels: Channels;
  /** Every worker process the file starts; all stopped after the file. */
  readonly workers: WorkerProcess[];
}

/** Kinds of handle that keep a process alive (process.getActiveResourcesInfo names) and that a fault test creates. */
const WATCHED_RESOURCES = ["TCPSocketWrap", "TCPServerWrap", "ProcessWrap", "PipeWrap", "Timeout"];

function countResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) if (WATCHED_RESOURCES.includes(r)) counts.set(r, (counts.get(r) ?? 0) + 1);
  return counts;
}

/**
 * Check, at the end of a test file, that it left nothing open: no socket,
 * server, child process, pipe or timer beyond those open when the file began
 * (`countOpenResources()` then). A leftover keeps jest's worker alive after
 * the run ("A worker process has failed to exit gracefully"). Closing is
 * asynchronous (a destroyed socket is released on a later turn), so this waits,
 * bounded, for the count to come back, and names what is left if it does not.
 */
export async function expectNothingLeftOpen(baseline: Map<string, number>, timeoutMs = 5_000): Promise<void> {
  const excess = () => {
    const now = countResources();
    return WATCHED_RESOURCES.filter((r) => (now.get(r) ?? 0) > (baseline.get(r) ?? 0)).map((r) => `${r} ×${(now.get(r) ?? 0) - (baseline.get(r) ?? 0)}`);
  };
  const deadline = Date.now() + timeoutMs;
  while (excess().length > 0 && Date.now() < deadline) await new Promise((resolve) => setImmediate(resolve));
  const left = excess();
  if (left.length > 0) {
    const handles = (process as unknown as { _getActiveHandles(): unknown[] })._getActiveHandles().map((h) => {
      const o = h as { constructor?: { name?: string }; remotePort?: number; localPort?: number; pid?: number; spawnargs?: string[] };
      return `${o.constructor?.name ?? typeof h}${o.pid ? ` pid ${o.pid} ${o.spawnargs?.slice(-1).join(" ")}` : ""}${o.remotePort ? ` ${o.localPort} -> ${o.remotePort}` : ""}`;
    });
    throw new Error(`the test file left open: ${left.join(", ")}
active handles: ${handles.join("; ")}`);
  }
}

/** The resources open now, for `expectNothingLeftOpen` at the end of the file. */
export function countOpenResources(): Map<string, number> {
  return countResources();
}

/** A fault test file's database and channels (created before its tests) and worker processes, all stopped and closed after it; then nothing may be left open. */
export function useFaultFixture(poolSize: number): FaultFixture {
  let t: TestDatabase | undefined;
  let channels: Channels | undefined;
  const workers: WorkerProcess[] = [];
  let baseline = new Map<string, number>();
  beforeAll(async () => {
    baseline = countOpenResources();
    t = await createTestDatabase(poolSize);
    channels = await startChannels();
  });
  afterAll(async () => {
    await stopAll(workers);
    await channels?.close();
    await t?.close();
    await expectNothingLeftOpen(baseline);
  });
  return {
    get t() {
      return t!;
    },
    get channels() {
      return channels!;
    },
    workers,
  };
}

/**
 * What every fault test proves once the outcomes are in: none lost, all sent
 * on every channel, no channel operation left unfinished, and (once nothing
 * is due soon) every record's handling history clean. Returns that audit for
 * checks of the test's own.
 */
export async function expectAllSentOnAll(query: Query, ids: readonly string[], count: number): Promise<HandlingAuditRow[]> {
  const check = await checkNotifications(query, ids);
  expect(check.lost).toEqual([]);
  expect(outcomeTally(check)).toEqual({ [SENT_ON_ALL]: count });
  expect(check.unfinished).toEqual([]);
  await waitForQuiet(query);
  const audit = await auditHandling(query);
  expect(auditProblems(audit)).toEqual([]);
  return audit;
}

/** Every notification arrived on both channels, and nothing arrived for anyone else. Returns the counts for the test's own checks. */
export function expectAllDelivered(channels: Received, sent: readonly SentNotification[]): ReturnType<typeof deliveries> {
  const d = deliveries(channels, sent);
  expect(d.emailMissing).toEqual([]);
  expect(d.slackMissing).toEqual([]);
  expect(d.strangers).toEqual([]);
  return d;
}
