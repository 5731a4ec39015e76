/**
 * Scenario 6: four worker processes (src/main.ts) at once against one
 * database, competing for the same jobs. No record may be handled twice for
 * a concern: every (record, concern) of every stream has exactly one
 * `complete` in its handling history and one claim unless a retry explains
 * another; each channel operation is sent exactly once (unique Message-IDs
 * at the SMTP server, one Slack post per operation).
 */
import {
  enqueueMany,
  expectAllDelivered,
  expectAllSentOnAll,
  seedEntities,
  spawnWorker,
  useFaultFixture,
  waitForAllOutcomes,
  workerEnv,
} from "../helpers/faultFlow";

const COUNT = 240;

const fixture = useFaultFixture(5);

it("four workers on one database: each record handled once per concern, each send made once", async () => {
  const { t, channels, workers } = fixture;
  const entities = await seedEntities(t.db, "four");
  channels.smtp.setLatency(10);
  const env = workerEnv({ databaseUrl: t.url, channels, extra: { WORKER_CONCURRENCY: "4", DB_POOL_SIZE: "8" } });
  for (const name of ["w1", "w2", "w3", "w4"]) workers.push(spawnWorker(name, env));
  await Promise.all(workers.map((w) => w.ready()));
  // Enqueued while the four are already polling, so they race for every job.
  const sent = await enqueueMany(t.db, { label: "four", count: COUNT, entities });
  const ids = sent.map((s) => s.trackingId);
  await waitForAllOutcomes(t.query, ids, 60_000);

  const audit = await expectAllSentOnAll(t.query, ids, COUNT);
  // No worker died, so no attempt was abandoned.
  expect(audit.filter((r) => r.cancels > 0)).toEqual([]);
  const retried = audit.filter((r) => r.claims > 1);

  const d = expectAllDelivered(channels, sent);
  expect([...d.emails.values()].filter((n) => n !== 1)).toEqual([]);
  expect([...d.posts.values()].filter((n) => n !== 1)).toEqual([]);
  expect(channels.smtp.messages).toHaveLength(COUNT);
  expect(channels.slack.posts).toHaveLength(COUNT);

  // All four took part (or this would be a one-worker test), and, by their own
  // logs, no operation was sent by two of them.
  const sentBy = workers.map((w) => [...w.output().matchAll(/"operationId":"([^"]+)"[^\n]*"msg":"email sent"/g)].map((m) => m[1]!));
  for (const list of sentBy) expect(list.length).toBeGreaterThan(0);
  const allSent = sentBy.flat();
  expect(new Set(allSent).size).toBe(allSent.length);
  expect(allSent).toHaveLength(COUNT);
  process.stdout.write(
    `fault 6: ${COUNT} notifications on 4 workers (emails sent per worker: ${sentBy.map((l) => l.length).join(", ")}); ` +
      `${audit.filter((r) => r.status === "Completed").length} (record, concern) pairs completed exactly once, ` +
      `${audit.filter((r) => r.status !== "Completed").length} sagas waiting for their deadline, ${retried.length} claimed again after a retry; ` +
      `${channels.smtp.messages.length} emails, ${channels.slack.posts.length} posts, no duplicate\n`,
  );
}, 120_000);
