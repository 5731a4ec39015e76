/**
 * Scenario 5: Slack answers bursts of 429 with Retry-After while
 * notifications flow. A rate limit is "come back later", not a failure: with
 * BOT_MAX_ATTEMPTS=1 (a single failure would be final) every notification is
 * still delivered, each 429 is one self_cancel (a deferral) in the handling
 * history, and no attempt is spent.
 *
 * The bursts are counted in calls, not timed: calls 21–25, 51–55, 81–85 and
 * 111–115 of chat.postMessage are answered 429, whatever the speed of the
 * machine. Every one of them is reached (each notification makes at least one
 * call, and there are more notifications than 115), and no record can be
 * deferred more often than the runner allows (20 deferrals) since there are
 * only 20 429s in all.
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

const COUNT = 200;
/** Calls answered as usual before each burst, and 429s in each burst. */
const BURSTS = [
  { pass: 20, limited: 5 },
  { pass: 25, limited: 5 },
  { pass: 25, limited: 5 },
  { pass: 25, limited: 5 },
];
const LIMITED = BURSTS.reduce((n, b) => n + b.limited, 0);

const fixture = useFaultFixture(5);

it(
  "bursts of 429 with Retry-After: delivered, each 429 a self_cancel deferral, no attempt used up",
  async () => {
    const { t, channels, workers } = fixture;
    const entities = await seedEntities(t.db, "rl");
    for (const burst of BURSTS) {
      // A reply after 0 ms is the usual answer; it keeps the place of the calls between bursts in the script.
      channels.slack.failNext(burst.pass, { kind: "delay", ms: 0 });
      channels.slack.failNext(burst.limited, { kind: "rateLimited", retryAfterSec: 1 });
    }
    const sent = await enqueueMany(t.db, { label: "rl", count: COUNT, entities });
    const ids = sent.map((s) => s.trackingId);
    // One attempt only: any rate limit counted as a failure would fail the notification.
    const w = spawnWorker("ratelimited", workerEnv({ databaseUrl: t.url, channels, extra: { BOT_MAX_ATTEMPTS: "1" } }));
    workers.push(w);
    await w.ready();
    await waitForAllOutcomes(t.query, ids, FLOW_LIMIT_MS);

    await expectAllSentOnAll(t.query, ids, COUNT);
    const d = expectAllDelivered(channels, sent);
    expect(d.slackDuplicates).toBe(0);

    const postCalls = channels.slack.calls.filter((c) => c.method === "chat.postMessage");
    const limited = postCalls.filter((c) => c.answer === "rate limited").length;
    expect(limited).toBe(LIMITED);
    expect(postCalls).toHaveLength(COUNT + LIMITED);
    const { rows } = await t.query<{ action: string; n: number; reasons: string[] }>(
      `select h.action, count(*)::int as n, array_agg(distinct h.reason) filter (where h.action = 'self_cancel') as reasons
       from slack.operations__handling_history h where h.concern = 'slack_bot' group by h.action order by h.action`,
    );
    const byAction = Object.fromEntries(rows.map((r) => [r.action, r.n]));
    // Each 429 is exactly one deferral, and nothing else went wrong: no fail, no cancel.
    expect(byAction).toEqual({ claim: COUNT + LIMITED, self_cancel: LIMITED, complete: COUNT });
    const reasons = rows.find((r) => r.action === "self_cancel")!.reasons;
    expect(reasons).toEqual([expect.stringMatching(/^asked to retry after 1000 ms: Slack rate-limited chat.postMessage/)]);
    const { rows: failed } = await t.query<{ n: number }>(`select count(*)::int as n from slack.events where type = 'FailedToSendSlackMessageEvent'`);
    expect(failed[0]!.n).toBe(0);
    process.stdout.write(`fault 5: ${COUNT} notifications, ${BURSTS.length} bursts of 429, ${limited} calls deferred, all delivered once\n`);
  },
  TEST_TIMEOUT_MS,
);
