/**
 * Scenario 1a: the real worker process (src/main.ts, RUN_API=false) is
 * SIGKILLed while sends are certainly in flight, twice, then a third process
 * finishes. The kill lands mid-send by construction, not by latency: the
 * receiving side has taken the whole message (or chat.postMessage call) and
 * holds its reply until the test releases it, after the kill.
 *
 * Both channels cannot be held in one process by construction: a held send
 * keeps its whole batch, and the job slots of its batch-mates, waiting, so a
 * worker whose slots fill up with held emails never reaches a Slack post. So
 * the first process dies with emails held, the second with Slack posts held
 * (its own wave of notifications guarantees it has posts to make).
 *
 * Every notification must still reach its outcome, and the repeats are
 * exactly the sends in doubt: an email delivered by a dead worker that had
 * not recorded it arrives once more (same Message-ID), nothing else twice.
 */
import {
  enqueueMany,
  expectAllDelivered,
  expectAllSentOnAll,
  expectHandoversExplained,
  expectRepeatsExplained,
  FLOW_LIMIT_MS,
  seedEntities,
  settleAfterDeath,
  spawnWorker,
  TEST_TIMEOUT_MS,
  useFaultFixture,
  waitForAllOutcomes,
  workerEnv,
  type DeathSnapshot,
} from "../helpers/faultFlow";

/** Two waves of 120 notifications. */
const WAVE = 120;

const fixture = useFaultFixture(10);

it(
  "SIGKILL while emails, then Slack posts, are held mid-send: every notification reaches its outcome, repeats exactly the sends in doubt",
  async () => {
    const { t, channels, workers } = fixture;
    const entities = await seedEntities(t.db, "kill");
    const env = workerEnv({ databaseUrl: t.url, channels });
    const sent = await enqueueMany(t.db, { label: "kill", count: WAVE, entities });
    const deaths: DeathSnapshot[] = [];

    // Round 1: a third of the emails go through, then the SMTP server holds
    // every reply. The first worker is killed once one send waits on it.
    const emailHold = channels.smtp.holdReplies({ after: WAVE / 3 });
    const first = spawnWorker("first", env);
    workers.push(first);
    await first.ready();
    await emailHold.waitForHeld(1, FLOW_LIMIT_MS);
    const firstKilledAt = Date.now();
    await first.kill();
    deaths.push(await settleAfterDeath({ query: t.query, channels }, first, ids(), sent, () => emailHold.release()));

    // Round 2: a second wave, so there are Slack posts left to make whatever
    // the first worker did; a third of its posts go through, then the stand-in
    // holds every chat.postMessage.
    sent.push(...(await enqueueMany(t.db, { label: "kill2", count: WAVE, entities })));
    const slackHold = channels.slack.holdReplies({ after: WAVE / 3 });
    const second = spawnWorker("second", env);
    workers.push(second);
    await second.ready();
    await slackHold.waitForHeld(1, FLOW_LIMIT_MS);
    const secondKilledAt = Date.now();
    await second.kill();
    deaths.push(await settleAfterDeath({ query: t.query, channels }, second, ids(), sent, () => slackHold.release()));

    const third = spawnWorker("third", env);
    workers.push(third);
    await third.ready();
    await waitForAllOutcomes(t.query, ids(), FLOW_LIMIT_MS);
    const recoveredInMs = Date.now() - secondKilledAt;

    // The kills landed mid-send: every held send was still awaited by its
    // worker when it died, and was an operation Running (in doubt) then.
    const heldEmails = emailHold.held.filter((h) => h.state === "released");
    const heldPosts = slackHold.held.filter((h) => h.state === "released");
    expect(heldEmails.filter((h) => h.clientGoneAt !== null && h.clientGoneAt < firstKilledAt)).toEqual([]);
    expect(heldPosts.filter((h) => h.clientGoneAt !== null && h.clientGoneAt < secondKilledAt)).toEqual([]);
    const trackingIdOf = (marker: string) => sent.find((s) => marker.includes(s.marker))?.trackingId;
    const heldEmailIds = heldEmails.map((h) => sent.find((s) => s.messageId === h.item.messageId)?.trackingId);
    const heldPostIds = heldPosts.map((h) => trackingIdOf(String(h.item.args.text)));
    expect(heldEmailIds.length).toBeGreaterThan(0);
    expect(heldPostIds.length).toBeGreaterThan(0);
    expect(heldEmailIds.filter((id) => !id || !deaths[0]!.running.email.has(id))).toEqual([]);
    expect(heldPostIds.filter((id) => !id || !deaths[1]!.running.slack.has(id))).toEqual([]);

    await expectAllSentOnAll(t.query, ids(), 2 * WAVE);
    expectAllDelivered(channels, sent);
    const account = expectRepeatsExplained(deaths, channels, sent);
    // Every held email reached the server, so each is one of the repeats.
    expect(account.emailsDeliveredInDoubt).toBeGreaterThanOrEqual(heldEmails.length);
    await expectHandoversExplained(t.query, deaths, ids());
    process.stdout.write(
      `fault 1a: ${2 * WAVE} notifications, two kills; held at the kills: ${heldEmails.length} emails, ${heldPosts.length} posts; ` +
        `in doubt (Running): ${deaths.map((x) => `${x.running.email.size} email + ${x.running.slack.size} slack`).join(", then ")}; ` +
        `repeats: ${account.emailRepeats} email (exactly the ${account.emailsDeliveredInDoubt} delivered in doubt), ${account.slackRepeats} slack; ` +
        `all outcomes ${recoveredInMs} ms after the second kill\n`,
    );

    function ids(): string[] {
      return sent.map((s) => s.trackingId);
    }
  },
  TEST_TIMEOUT_MS,
);
