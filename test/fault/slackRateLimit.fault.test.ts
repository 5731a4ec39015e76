/**
 * Scenario 5: Slack answers bursts of 429 with Retry-After while
 * notifications flow. A rate limit is "come back later", not a failure: with
 * BOT_MAX_ATTEMPTS=1 (a single failure would be final) every notification is
 * still delivered, each 429 is one self_cancel (a deferral) in the handling
 * history, and no attempt is spent.
 */
import { waitFor } from "../helpers/db";
import {
  countOutcomes,
  enqueueMany,
  expectAllDelivered,
  expectAllSentOnAll,
  seedEntities,
  sleep,
  spawnWorker,
  useFaultFixture,
  waitForAllOutcomes,
  workerEnv,
} from "../helpers/faultFlow";

const COUNT = 200;

const fixture = useFaultFixture(5);

it("bursts of 429 with Retry-After: delivered, each 429 a self_cancel deferral, no attempt used up", async () => {
  const { t, channels, workers } = fixture;
  const entities = await seedEntities(t.db, "rl");
  const sent = await enqueueMany(t.db, { label: "rl", count: COUNT, entities });
  const ids = sent.map((s) => s.trackingId);
  // One attempt only: any rate limit counted as a failure would fail the notification.
  const w = spawnWorker("ratelimited", workerEnv({ databaseUrl: t.url, channels, extra: { BOT_MAX_ATTEMPTS: "1" } }));
  workers.push(w);
  await w.ready();
  await waitFor(async () => channels.slack.posts.length > 0, { timeoutMs: 30_000, what: "the first Slack post" });

  // 1.5 s of 429s every 3 s while the flow runs (for 20 s at most).
  let bursts = 0;
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline && (await countOutcomes(t.query, ids)) < COUNT) {
    channels.slack.rateLimitBurst({ retryAfterSec: 1, durationMs: 1_500 });
    bursts += 1;
    await sleep(3_000);
  }
  channels.slack.endRateLimitBurst();
  await waitForAllOutcomes(t.query, ids, 60_000);

  await expectAllSentOnAll(t.query, ids, COUNT);
  const d = expectAllDelivered(channels, sent);
  expect(d.slackDuplicates).toBe(0);

  const limited = channels.slack.calls.filter((c) => c.method === "chat.postMessage" && c.answer === "rate limited").length;
  expect(limited).toBeGreaterThan(0);
  const { rows } = await t.query<{ action: string; n: number; reasons: string[] }>(
    `select h.action, count(*)::int as n, array_agg(distinct h.reason) filter (where h.action = 'self_cancel') as reasons
       from slack.operations__handling_history h where h.concern = 'slack_bot' group by h.action order by h.action`,
  );
  const byAction = Object.fromEntries(rows.map((r) => [r.action, r.n]));
  // Each 429 is exactly one deferral, and nothing else went wrong: no fail, no cancel.
  expect(byAction).toEqual({ claim: COUNT + limited, self_cancel: limited, complete: COUNT });
  const reasons = rows.find((r) => r.action === "self_cancel")!.reasons;
  expect(reasons).toEqual([expect.stringMatching(/^asked to retry after 1000 ms: Slack rate-limited chat.postMessage/)]);
  const { rows: failed } = await t.query<{ n: number }>(
    `select count(*)::int as n from slack.events where type = 'FailedToSendSlackMessageEvent'`,
  );
  expect(failed[0]!.n).toBe(0);
  process.stdout.write(`fault 5: ${COUNT} notifications, ${bursts} bursts of 429, ${limited} calls deferred, all delivered once\n`);
}, 120_000);
