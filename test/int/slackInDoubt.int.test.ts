/**
 * The worst moment for a Slack send: the message is in the channel but the
 * worker dies before it learns so, let alone records it. By construction:
 * the stand-in posts the message and never answers, and the test SIGKILLs
 * the worker process (the real src/main.ts) once the post is in. Another
 * worker takes the job over after the lease, finds the message by the
 * operation id in its metadata (conversations.history) and records it:
 * exactly one message, and the notification is sent with that message's ts.
 */
import { putEntity } from "../../src/entities/entity.repository";
import { enqueueNotification } from "../../src/notification/enqueue";
import { Streams } from "../../src/notification/streams";
import { findRecords } from "../../src/streams/read";
import { SENT_ON_ALL, channelHistory, spawnWorker, useFaultFixture, waitForAllOutcomes, workerEnv } from "../helpers/faultFlow";
import { person } from "../helpers/tidings";

const fixture = useFaultFixture(10);

it("killed after the post reached Slack, before any answer: recovered from the channel's history, one message, sent with its ts", async () => {
  const { t, channels, workers } = fixture;
  await putEntity(t.db, "kim", person({ name: "Kim", slack: "#deploys", preferences: { channels: ["slack"], optedOut: [], delivery: "all" } }), "test");
  channels.slack.failNext(1, { kind: "postThenHang" });

  const first = spawnWorker("first", workerEnv({ databaseUrl: t.url, channels }));
  workers.push(first);
  await first.ready();
  const subject = "Deploy *done* <!channel> & co";
  const { trackingId } = await enqueueNotification(t.db, { entityId: "kim", subject, text: "Shipped.", markdown: "**Shipped** to prod." });
  const operationId = `${trackingId}:slack`;

  // The message is in the channel; the worker is still waiting for Slack's answer.
  await channels.slack.waitForPosts(1, 20_000);
  await first.kill();
  const { rows: running } = await t.query<{ status: string }>(
    `select h.status::text from slack.operations o join slack.operations__handling h on h.position = o.position and h.concern = 'slack_bot' where o.id = $1`,
    [trackingId],
  );
  expect(running).toEqual([{ status: "Running" }]);

  const second = spawnWorker("second", workerEnv({ databaseUrl: t.url, channels }));
  workers.push(second);
  await second.ready();
  await waitForAllOutcomes(t.query, [trackingId], 30_000);

  const posted = channels.slack.postsOf(operationId);
  expect(posted).toHaveLength(1);
  expect(channels.slack.posts).toHaveLength(1);
  expect(posted[0]!.blocks![0]).toEqual({ type: "header", text: { type: "plain_text", text: subject } });

  const outcome = await findRecords(t.adminDb, Streams.notificationEvents, { ids: [trackingId], types: [SENT_ON_ALL] });
  expect(outcome).toHaveLength(1);
  const succeeded = await findRecords(t.adminDb, Streams.slackEvents, { ids: [trackingId], types: ["SucceededInSendingSlackMessageEvent"] });
  expect(succeeded.map((e) => e.payload)).toEqual([{ operationId, attempt: 2, channel: posted[0]!.channel, ts: posted[0]!.ts, foundInHistory: true }]);

  // The abandoned attempt is visible, then the recovered one.
  const history = await channelHistory(t.query, "slack.operations", trackingId);
  expect(history.map((h) => h.action)).toEqual(["claim", "cancel", "claim", "complete"]);
  expect(history[1]!.reason).toMatch(/was abandoned before recording an outcome/);
}, 90_000);
