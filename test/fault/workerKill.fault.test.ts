/**
 * Scenario 1a: the real worker process (src/main.ts, RUN_API=false) is
 * SIGKILLed while emails and Slack posts are in flight, then started again.
 * Every notification must still reach its outcome, and the only repeated
 * sends are those that were in flight at the kill.
 */
import { waitFor } from "../helpers/db";
import {
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

const COUNT = 240;

const fixture = useFaultFixture(10);

it("SIGKILL mid-flow: every notification reaches its outcome, repeats bounded by the sends in flight", async () => {
  const { t, channels, workers } = fixture;
  const entities = await seedEntities(t.db, "kill");
  // Server latency keeps several sends in flight at any moment.
  channels.smtp.setLatency(100);
  channels.slack.failNext(10_000, { kind: "delay", ms: 50 });
  const sent = await enqueueMany(t.db, { label: "kill", count: COUNT, entities });
  const ids = sent.map((s) => s.trackingId);
  const env = workerEnv({ databaseUrl: t.url, channels });

  const first = spawnWorker("first", env);
  workers.push(first);
  await first.ready();
  await waitFor(async () => channels.smtp.messages.length >= COUNT / 3, {
    timeoutMs: 45_000,
    what: "a third of the emails to arrive",
  });
  await first.kill();
  const inFlight = await runningSends(t.query);
  const killedAt = Date.now();
  // The kill must land mid-flow, or this test proves nothing.
  expect(inFlight.email + inFlight.slack).toBeGreaterThan(0);

  const second = spawnWorker("second", env);
  workers.push(second);
  await second.ready();
  await waitForAllOutcomes(t.query, ids, 60_000);
  const recoveredInMs = Date.now() - killedAt;

  await expectAllSentOnAll(t.query, ids, COUNT);

  const d = expectAllDelivered(channels, sent);
  // A send is repeated only if it reached the other side but its outcome was
  // not committed: at most the operations Running when the process died.
  expect(d.emailDuplicates).toBeLessThanOrEqual(inFlight.email);
  expect(d.slackDuplicates).toBeLessThanOrEqual(inFlight.slack);
  // Every repeated email carried the same Message-ID (counted per id above), so a receiver can drop it.
  process.stdout.write(
    `fault 1a: ${COUNT} notifications; in flight at kill: ${inFlight.email} email, ${inFlight.slack} slack; ` +
      `duplicates: ${d.emailDuplicates} email, ${d.slackDuplicates} slack; all outcomes ${recoveredInMs} ms after the kill\n`,
  );
}, 150_000);
