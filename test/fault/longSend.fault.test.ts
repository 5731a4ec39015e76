/**
 * Scenario 7: a worker dies holding a job in the middle of a slow SMTP send.
 * graphile-worker alone would leave that job locked for 4 hours; with
 * WORKER_LEASE_MS=2000 the other worker takes it over within seconds, and
 * the handling history tells the story: the abandoned attempt is cancelled
 * with its reason, then the record is claimed again and completed.
 */
import { waitFor } from "../helpers/db";
import {
  channelHistory,
  enqueueMany,
  expectAllDelivered,
  expectAllSentOnAll,
  runningSends,
  seedEntities,
  spawnWorker,
  useFaultFixture,
  waitForAllOutcomes,
  workerEnv,
} from "../helpers/faultFlow";

const COUNT = 200;
const LEASE_MS = 2_000;
/** The slow send: far longer than the lease, so only a takeover can finish it in time. */
const SLOW_MS = 15_000;
/** Lease + one heartbeat period + a poll + a send, with a wide margin for a loaded machine. */
const TAKEOVER_LIMIT_MS = 12_000;

const fixture = useFaultFixture(5);

it("a worker killed during a slow send: another worker finishes that notification within seconds, the abandoned attempt in the history", async () => {
  const { t, channels, workers } = fixture;
  const entities = await seedEntities(t.db, "slow");
  channels.smtp.setLatency(50);
  // The very first mail transaction takes SLOW_MS to be answered.
  channels.smtp.faultNext(1, { action: "delay", stage: "DATA", ms: SLOW_MS });
  const sent = await enqueueMany(t.db, { label: "slow", count: COUNT, entities });
  const ids = sent.map((s) => s.trackingId);
  const env = workerEnv({ databaseUrl: t.url, channels, extra: { WORKER_LEASE_MS: String(LEASE_MS) } });

  const holder = spawnWorker("holder", env);
  workers.push(holder);
  await holder.ready();
  // The slow message is in (its DATA received); the server has not answered yet.
  const slow = await waitFor(
    async () => channels.smtp.transactions.find((x) => x.outcome === "open" && x.messageId !== null),
    { timeoutMs: 30_000, what: "the slow send to start" },
  );
  const slowOne = sent.find((s) => s.messageId === slow.messageId)!;
  expect(slowOne).toBeDefined();
  const before = await channelHistory(t.query, "email.operations", slowOne.trackingId);
  expect(before.map((h) => `${h.action}:${h.to_status}`)).toEqual(["claim:Running"]);

  const rescuer = spawnWorker("rescuer", env);
  workers.push(rescuer);
  await rescuer.ready();
  await holder.kill();
  const killedAt = Date.now();
  const inFlight = await runningSends(t.query);

  await waitFor(
    async () => (await channelHistory(t.query, "email.operations", slowOne.trackingId)).at(-1)?.action === "complete",
    { timeoutMs: 30_000, intervalMs: 100, what: "the slow notification's email to be completed by the other worker" },
  );
  const takeoverMs = Date.now() - killedAt;
  expect(takeoverMs).toBeLessThan(TAKEOVER_LIMIT_MS);

  const history = await channelHistory(t.query, "email.operations", slowOne.trackingId);
  expect(history.map((h) => `${h.action}:${h.to_status}:${h.attempt}`)).toEqual([
    "claim:Running:1",
    "cancel:AvailableAfterExternalCancellation:1",
    "claim:Running:2",
    "complete:Completed:2",
  ]);
  expect(history[1]!.reason).toMatch(/^attempt 1 by job \d+ was abandoned before recording an outcome; handling again$/);

  await waitForAllOutcomes(t.query, ids, 60_000);
  await expectAllSentOnAll(t.query, ids, COUNT);
  // The server finishes the slow transaction of the dead worker too: the same
  // message, the same Message-ID, a second time (a receiver can drop it).
  await waitFor(async () => slow.outcome !== "open", { timeoutMs: SLOW_MS + 10_000, what: "the slow transaction to end" });
  const d = expectAllDelivered(channels, sent);
  expect(d.emails.get(slowOne.messageId)).toBe(2);
  expect(d.emailDuplicates).toBeLessThanOrEqual(inFlight.email);
  expect(d.slackDuplicates).toBeLessThanOrEqual(inFlight.slack);
  process.stdout.write(
    `fault 7: ${COUNT} notifications; worker killed during a ${SLOW_MS} ms send; taken over and completed ${takeoverMs} ms after the kill ` +
      `(lease ${LEASE_MS} ms); in flight at the kill: ${inFlight.email} email, ${inFlight.slack} slack; ` +
      `duplicates: ${d.emailDuplicates} email, ${d.slackDuplicates} slack\n`,
  );
}, 150_000);
