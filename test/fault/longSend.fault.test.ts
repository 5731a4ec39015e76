/**
 * Scenario 7: a worker dies in the middle of a send that does not end (an
 * inline send: the claim of its notification bot's transaction, no job).
 * graphile-worker alone would leave a job locked for 4 hours;
 * with WORKER_LEASE_MS=2000 the other worker takes it over within seconds,
 * and the handling history tells the story: the abandoned attempt is
 * cancelled with its reason, then the record is claimed again and completed.
 *
 * The send is in flight by construction: the SMTP server takes the first
 * message in full and holds its reply until the test releases it, after the
 * takeover (so it is "slow" for as long as the test needs, not for a fixed
 * 15 s that a loaded machine could outlast before the kill).
 */
import { waitFor } from "../helpers/db";
import {
  cancelsInHistory,
  channelHistory,
  enqueueMany,
  expectAllDelivered,
  expectAllSentOnAll,
  FLOW_LIMIT_MS,
  repeatsBeyondHandovers,
  seedEntities,
  spawnWorker,
  TEST_TIMEOUT_MS,
  useFaultFixture,
  waitForAllOutcomes,
  workerEnv,
} from "../helpers/faultFlow";

const COUNT = 200;
const LEASE_MS = 2_000;
/** Lease + one heartbeat period + a poll + a send, with a wide margin for a loaded machine. */
const TAKEOVER_LIMIT_MS = 12_000;

const fixture = useFaultFixture(5);

it(
  "a worker killed during a send that does not end: another worker finishes that notification within seconds, the abandoned attempt in the history",
  async () => {
    const { t, channels, workers } = fixture;
    const entities = await seedEntities(t.db, "slow");
    // The very first mail transaction is answered only when the test says so.
    const slowHold = channels.smtp.holdReplies({ count: 1 });
    const sent = await enqueueMany(t.db, { label: "slow", count: COUNT, entities });
    const ids = sent.map((s) => s.trackingId);
    const env = workerEnv({ databaseUrl: t.url, channels, extra: { WORKER_LEASE_MS: String(LEASE_MS) } });

    const holder = spawnWorker("holder", env);
    workers.push(holder);
    await holder.ready();
    // The slow message is in (its DATA received); the server has not answered.
    const [slow] = await slowHold.waitForHeld(1, FLOW_LIMIT_MS);
    const slowOne = sent.find((s) => s.messageId === slow!.item.messageId)!;
    expect(slowOne).toBeDefined();
    const before = await channelHistory(t.query, "email.operations", slowOne.trackingId);
    expect(before.map((h) => `${h.action}:${h.to_status}`)).toEqual(["claim:Running"]);

    const rescuer = spawnWorker("rescuer", env);
    workers.push(rescuer);
    await rescuer.ready();
    const killedAt = Date.now();
    await holder.kill();
    // The holder was still waiting for that reply when it died.
    expect(slow!.clientGoneAt).toBeGreaterThanOrEqual(killedAt);

    await waitFor(async () => (await channelHistory(t.query, "email.operations", slowOne.trackingId)).at(-1)?.action === "complete", {
      timeoutMs: 30_000,
      intervalMs: 100,
      what: "the slow notification's email to be completed by the other worker",
    });
    const takeoverMs = Date.now() - killedAt;
    expect(takeoverMs).toBeLessThan(TAKEOVER_LIMIT_MS);

    const history = await channelHistory(t.query, "email.operations", slowOne.trackingId);
    expect(history.map((h) => `${h.action}:${h.to_status}:${h.attempt}`)).toEqual([
      "claim:Running:1",
      "cancel:AvailableAfterExternalCancellation:1",
      "claim:Running:2",
      "complete:Completed:2",
    ]);
    // The notification bot's transaction claimed it for the process that died (an inline send); the lease handed it over.
    expect(history[1]!.reason).toMatch(/^attempt 1 by inline:[0-9a-f-]{36} was abandoned before recording an outcome \(that process stopped heart-beating\); handling again$/);

    // The server had the dead worker's message and now queues it too: the same
    // message, the same Message-ID, a second time (a receiver can drop it).
    expect(slowHold.release()).toBe(1);
    await waitForAllOutcomes(t.query, ids, FLOW_LIMIT_MS);
    await expectAllSentOnAll(t.query, ids, COUNT);
    const d = expectAllDelivered(channels, sent);
    expect(d.emails.get(slowOne.messageId)).toBe(2);
    // Only a send the holder left Running (handed over with an "abandoned"
    // cancel) can arrive twice. Read from the history, so it does not matter
    // how far the rescuer had got when the holder died.
    const repeats = await repeatsBeyondHandovers(t.query, channels, sent);
    expect(repeats.beyond).toEqual([]);
    expect((await cancelsInHistory(t.query, ids)).filter((c) => c.cancels !== c.abandoned)).toEqual([]);
    const inDoubt = repeats.handedOver;
    process.stdout.write(
      `fault 7: ${COUNT} notifications; worker killed while its send was held; taken over and completed ${takeoverMs} ms after the kill ` +
        `(lease ${LEASE_MS} ms); handed over: ${inDoubt.email} email, ${inDoubt.slack} slack; ` +
        `repeats: ${d.emailDuplicates} email, ${d.slackDuplicates} slack\n`,
    );
  },
  TEST_TIMEOUT_MS,
);
