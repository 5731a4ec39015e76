/**
 * Scenario 6: four worker processes (src/main.ts) at once against one
 * database, competing for the same jobs. No record may be handled twice for
 * a concern: every (record, concern) of every stream has exactly one
 * `complete` in its handling history and one claim unless a retry explains
 * another; each channel operation is sent exactly once (unique Message-IDs
 * at the SMTP servers, one Slack post per operation).
 *
 * That all four take part is made so, not hoped for: each worker sends
 * through an SMTP server of its own, and every server holds its replies
 * until each of the four has a send waiting there. A worker blocked on a
 * held send keeps at most WORKER_CONCURRENCY + its local queue (4 + 10) jobs
 * locked, so three blocked workers leave most of the 240 email jobs to the
 * fourth, which sends one of them sooner or later.
 */
import {
  enqueueMany,
  expectAllDelivered,
  expectAllSentOnAll,
  FLOW_LIMIT_MS,
  seedEntities,
  spawnWorker,
  TEST_TIMEOUT_MS,
  useFaultFixture,
  waitForAllOutcomes,
  workerEnv,
} from "../helpers/faultFlow";
import { startSmtpServer, type TestSmtpServer } from "../helpers/smtpServer";

const COUNT = 240;
const NAMES = ["w1", "w2", "w3", "w4"];

const fixture = useFaultFixture(5);

it(
  "four workers on one database: each record handled once per concern, each send made once",
  async () => {
    // The SMTP servers of w2..w4 (w1 uses the fixture's), closed by the end of the test.
    const ownServers: TestSmtpServer[] = [];
    try {
      for (let i = 1; i < NAMES.length; i++) ownServers.push(await startSmtpServer());
      await fourWorkers([fixture.channels.smtp, ...ownServers]);
    } finally {
      // Stopped first: a worker keeps its pooled SMTP connections open.
      await Promise.all(fixture.workers.map((w) => w.stop(5_000)));
      await Promise.all(ownServers.map((s) => s.close()));
    }
  },
  TEST_TIMEOUT_MS,
);

async function fourWorkers(servers: TestSmtpServer[]): Promise<void> {
  const { t, channels, workers } = fixture;
  const entities = await seedEntities(t.db, "four");
  const holds = servers.map((s) => s.holdReplies());
  NAMES.forEach((name, i) =>
    workers.push(spawnWorker(name, workerEnv({ databaseUrl: t.url, channels, extra: { WORKER_CONCURRENCY: "4", DB_POOL_SIZE: "8", SMTP_URL: servers[i]!.url } }))),
  );
  await Promise.all(workers.map((w) => w.ready()));
  // Enqueued while the four are already polling, so they race for every job.
  const sent = await enqueueMany(t.db, { label: "four", count: COUNT, entities });
  const ids = sent.map((s) => s.trackingId);
  await Promise.all(holds.map((h) => h.waitForHeld(1, FLOW_LIMIT_MS)));
  const releasedAt = Date.now();
  const held = holds.map((h) => h.release());
  // No worker gave up waiting for its reply (that would be a send it retried).
  expect(holds.flatMap((h) => h.held.filter((x) => x.clientGoneAt !== null && x.clientGoneAt < releasedAt))).toEqual([]);
  await waitForAllOutcomes(t.query, ids, FLOW_LIMIT_MS);

  const audit = await expectAllSentOnAll(t.query, ids, COUNT);
  // No worker died, so no attempt was abandoned (on failure, each cancel's reason says who cancelled what and why).
  const cancelled = audit.filter((r) => r.cancels > 0);
  const reasons = async () =>
    (
      await t.query<{ line: string }>(
        `select format('%s %s %s: %s', x.stream, x.position, x.recorded_at, x.reason) as line from (
           select 'email.operations' as stream, position, recorded_at, reason from email.operations__handling_history where action = 'cancel'
           union all select 'slack.operations', position, recorded_at, reason from slack.operations__handling_history where action = 'cancel') x
         order by x.recorded_at limit 10`,
      )
    ).rows.map((r) => r.line);
  expect(cancelled.length === 0 ? [] : await reasons()).toEqual([]);
  const retried = audit.filter((r) => r.claims > 1);

  const messages = servers.flatMap((s) => s.messages);
  const d = expectAllDelivered({ smtp: { messages }, slack: channels.slack }, sent);
  expect([...d.emails.values()].filter((n) => n !== 1)).toEqual([]);
  expect([...d.posts.values()].filter((n) => n !== 1)).toEqual([]);
  expect(messages).toHaveLength(COUNT);
  expect(channels.slack.posts).toHaveLength(COUNT);

  // All four took part, counted at the receiving side (each server is one
  // worker's), and, by their own logs, no operation was sent by two of them.
  const perServer = servers.map((s) => s.messages.length);
  for (const n of perServer) expect(n).toBeGreaterThan(0);
  const sentBy = workers.map((w) => [...w.output().matchAll(/"operationId":"([^"]+)"[^\n]*"msg":"email sent"/g)].map((m) => m[1]!));
  expect(sentBy.map((l) => l.length)).toEqual(perServer);
  const allSent = sentBy.flat();
  expect(new Set(allSent).size).toBe(allSent.length);
  expect(allSent).toHaveLength(COUNT);
  process.stdout.write(
    `fault 6: ${COUNT} notifications on 4 workers (emails sent per worker: ${perServer.join(", ")}; held until all four had one: ${held.join(", ")}); ` +
      `${audit.filter((r) => r.status === "Completed").length} (record, concern) pairs completed exactly once, ` +
      `${audit.filter((r) => r.status !== "Completed").length} sagas waiting for their deadline, ${retried.length} claimed again after a retry; ` +
      `${messages.length} emails, ${channels.slack.posts.length} posts, no duplicate\n`,
  );
}
