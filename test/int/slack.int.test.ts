import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { inTransaction } from "../../src/db/database";
import { createSlackPoster, LOOKUP_FAILED, type SlackPoster } from "../../src/slack/client";
import { composeSlackParts } from "../../src/slack/compose";
import { createSlackBot } from "../../src/slack/slack.bot";
import type { SendSlackMessageOp } from "../../src/slack/slack.schemas";
import { append } from "../../src/streams/append";
import { getHandling, getHistory } from "../../src/streams/handling";
import type { HandlingStatus } from "../../src/streams/interfaces";
import { Streams } from "../../src/notification/streams";
import { findRecords } from "../../src/streams/read";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { ALL_SCOPES, startSlackStandIn, type SlackStandIn } from "../helpers/slackStandIn";
import { startTestWorker } from "../helpers/worker";

/**
 * The Slack concern end to end: a SendSlackMessageOp appended by the
 * notification bot, the real graphile-worker running the slack bot, the real
 * SDK posting to the stand-in, and the outcome on slack.events and in the
 * handling history.
 */

const CONCERN = "slack_bot";
let t: TestDatabase;
let standIn: SlackStandIn;
let tmp: string;
let seq = 0;

beforeAll(async () => {
  [t, standIn] = await Promise.all([createTestDatabase(), startSlackStandIn()]);
  tmp = mkdtempSync(path.join(os.tmpdir(), "tidings-slack-int-"));
});
afterAll(async () => {
  await Promise.all([t?.close(), standIn?.close()]);
  rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => standIn.reset());

function sdkPoster(timeoutMs = 2_000): SlackPoster {
  return createSlackPoster({ token: standIn.token, apiUrl: standIn.apiUrl, sinkFile: path.join(tmp, "unused.jsonl"), timeoutMs });
}

/** Append one SendSlackMessageOp as the notification bot (a declared producer) and return its id and position. */
async function enqueue(fields: Partial<SendSlackMessageOp> = {}): Promise<{ id: string; position: number; op: SendSlackMessageOp }> {
  const id = `ntf-slack-${++seq}`;
  const op: SendSlackMessageOp = {
    operationId: `${id}:slack`,
    notificationId: id,
    purpose: "notification",
    entityId: "entity-1",
    channel: "#deploys",
    text: "Deploy finished",
    tags: {},
    ...fields,
  };
  const [appended] = await inTransaction(t.db, "notification_bot", (tx) => append(tx, Streams.slackOperations, [{ id, type: "SendSlackMessageOp", payload: op }]));
  return { id, position: appended!.position, op };
}

/** Run the slack bot on real graphile-worker until `fn` is done. */
async function withWorker<T>(poster: SlackPoster, fn: () => Promise<T>, options: { maxAttempts?: number } = {}): Promise<T> {
  const worker = await startTestWorker(t, [createSlackBot()], { slack: { poster } }, options);
  try {
    return await fn();
  } finally {
    await worker.stop();
  }
}

async function until(position: number, status: HandlingStatus) {
  return waitFor(
    async () => {
      const state = await getHandling(t.adminDb, Streams.slackOperations, position, CONCERN);
      return state.status === status ? state : undefined;
    },
    { timeoutMs: 10_000, what: `slack.operations ${position} to be ${status}` },
  );
}

async function eventsOf(id: string) {
  return findRecords(t.adminDb, Streams.slackEvents, { ids: [id] });
}

async function historyOf(position: number) {
  return getHistory(t.adminDb, Streams.slackOperations, position, CONCERN);
}

const claims = (history: Awaited<ReturnType<typeof historyOf>>) => history.filter((h) => h.toStatus === "Running");

describe("slack bot", () => {
  it("delivers: the post reaches Slack escaped; Requested and Succeeded (channel, ts) recorded; handling Completed", async () => {
    const { id, position, op } = await enqueue({ text: "Deploy <!channel> & friends: done", tags: { team: "ops" } });
    await withWorker(sdkPoster(), () => until(position, "Completed"));

    expect(standIn.posts).toHaveLength(1);
    const post = standIn.posts[0]!;
    expect(post).toMatchObject({ requestedChannel: "#deploys", text: "Deploy &lt;!channel&gt; &amp; friends: done", mrkdwn: false });
    expect(post.headers.authorization).toBe(`Bearer ${standIn.token}`);

    const events = await eventsOf(id);
    expect(events.map((e) => [e.type, e.payload])).toEqual([
      ["SendSlackMessageRequestedEvent", { operationId: op.operationId, attempt: 1, channel: "#deploys" }],
      ["SucceededInSendingSlackMessageEvent", { operationId: op.operationId, attempt: 1, channel: post.channel, ts: post.ts }],
    ]);
    for (const e of events) {
      expect(e.causedBy).toEqual({ stream: Streams.slackOperations, position });
      expect(e.recordedBy).toMatch(/slack_bot/);
    }
    const history = await historyOf(position);
    expect(history.map((h) => [h.fromStatus, h.toStatus])).toEqual([
      ["AvailableByDefault", "Running"],
      ["Running", "Completed"],
    ]);
  });

  it("delivers a long message intact: a 3,000-character unicode line with characters Slack must see escaped", async () => {
    const text = `${"Grüße—你好🚀 <b>&</b> ".repeat(150)}end`;
    const { position } = await enqueue({ text });
    await withWorker(sdkPoster(), () => until(position, "Completed"));
    const escaped = text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
    expect(standIn.posts[0]!.text).toBe(escaped);
  });

  it("delivers a mrkdwn body as a section block, the plain text kept as fallback", async () => {
    const { position } = await enqueue({ text: "Build 42 passed", mrkdwn: "*Build 42* passed <https://ci.example/42|details> <!here>" });
    await withWorker(sdkPoster(), () => until(position, "Completed"));
    expect(standIn.posts[0]).toMatchObject({
      text: "Build 42 passed",
      // The fallback is plain text: never formatted (it was formatted as mrkdwn before).
      mrkdwn: false,
      blocks: [{ type: "section", text: { type: "mrkdwn", text: "*Build 42* passed <https://ci.example/42|details> &lt;!here&gt;" } }],
    });
  });

  it("channel_not_found: a permanent failure at once, one attempt, FailedToSendSlackMessageEvent, the error kept", async () => {
    standIn.failNext(1, { kind: "slackError", error: "channel_not_found" });
    const { id, position, op } = await enqueue({ channel: "#gone" });
    const state = await withWorker(sdkPoster(), async () => {
      const failed = await until(position, "Failed");
      // Give a wrongly scheduled retry the time to show up (several poll intervals).
      await new Promise((r) => setTimeout(r, 400));
      return failed;
    });

    expect(standIn.calls).toHaveLength(1);
    expect(standIn.posts).toHaveLength(0);
    expect(state.attempts).toBe(1);
    expect(state.lastError).toBe("Slack refused chat.postMessage: channel_not_found");

    const events = await eventsOf(id);
    expect(events.map((e) => e.type)).toEqual(["SendSlackMessageRequestedEvent", "FailedToSendSlackMessageEvent"]);
    expect(events[1]!.payload).toEqual({
      operationId: op.operationId,
      attempt: 1,
      error: "Slack refused chat.postMessage: channel_not_found",
      slackError: "channel_not_found",
      httpStatus: 200,
      classification: "permanent",
      reason: "permanent",
    });

    const history = await historyOf(position);
    expect(history.map((h) => h.action)).toEqual(["claim", "fail"]);
    expect(history[1]!.reason).toMatch(/^permanent failure on attempt 1: .*channel_not_found/);
    expect(history[1]!.details).toMatchObject({ attempt: 1, transient: false, external: { slackError: "channel_not_found", httpStatus: 200 } });
  });

  it("429 with Retry-After: 1 → retried no sooner than a second later and delivered; two attempts, no failure event", async () => {
    standIn.failNext(1, { kind: "rateLimited", retryAfterSec: 1 });
    const { id, position, op } = await enqueue();
    await withWorker(sdkPoster(), () => until(position, "Completed"));

    expect(standIn.calls.map((c) => c.answer)).toEqual(["rate limited", "ok"]);
    expect(standIn.calls[1]!.receivedAt - standIn.calls[0]!.receivedAt).toBeGreaterThanOrEqual(1_000);

    const history = await historyOf(position);
    expect(claims(history)).toHaveLength(2);
    // A rate limit is "try again later" (self-cancel), not a failed attempt.
    expect(history.map((h) => h.action)).toEqual(["claim", "self_cancel", "claim", "complete"]);
    expect(history[1]!.details).toMatchObject({ retryInMs: 1_000, external: { slackError: "ratelimited", httpStatus: 429 } });

    const events = await eventsOf(id);
    expect(events.map((e) => e.type)).toEqual(["SendSlackMessageRequestedEvent", "SendSlackMessageRequestedEvent", "SucceededInSendingSlackMessageEvent"]);
    expect(events[2]!.payload).toMatchObject({ operationId: op.operationId, attempt: 2, ts: standIn.posts[0]!.ts });
  });

  it("HTTP 500 twice then OK → delivered on the third attempt, no failure event", async () => {
    standIn.failNext(2, { kind: "httpStatus", status: 500 });
    const { id, position } = await enqueue();
    await withWorker(sdkPoster(), () => until(position, "Completed"), { maxAttempts: 3 });

    expect(standIn.calls.map((c) => c.answer)).toEqual(["http 500", "http 500", "ok"]);
    const history = await historyOf(position);
    expect(claims(history)).toHaveLength(3);
    expect(history.filter((h) => h.action === "fail").map((h) => h.reason)).toEqual([
      "attempt 1 failed: Slack answered HTTP 500 Internal Server Error",
      "attempt 2 failed: Slack answered HTTP 500 Internal Server Error",
    ]);
    const events = await eventsOf(id);
    expect(events.map((e) => e.type)).not.toContain("FailedToSendSlackMessageEvent");
    expect(events.at(-1)).toMatchObject({ type: "SucceededInSendingSlackMessageEvent", payload: { attempt: 3 } });
  });

  it("HTTP 500 on every attempt → one FailedToSendSlackMessageEvent after the last, reason 'attempts exhausted'", async () => {
    standIn.failNext(3, { kind: "httpStatus", status: 500 });
    const { id, position, op } = await enqueue();
    const state = await withWorker(sdkPoster(), () => until(position, "Failed"), { maxAttempts: 3 });

    expect(standIn.calls).toHaveLength(3);
    expect(state.attempts).toBe(3);
    const events = await eventsOf(id);
    const failures = events.filter((e) => e.type === "FailedToSendSlackMessageEvent");
    expect(failures.map((e) => e.payload)).toEqual([
      {
        operationId: op.operationId,
        attempt: 3,
        error: "Slack answered HTTP 500 Internal Server Error",
        slackError: null,
        httpStatus: 500,
        classification: "transient",
        reason: "attempts exhausted",
      },
    ]);
    expect((await historyOf(position)).at(-1)!.reason).toMatch(/^gave up after attempt 3/);
  });

  it("without a token, the local sink writes one JSON line per message and the outcome is recorded", async () => {
    const file = path.join(tmp, "sink", "slack.jsonl");
    const sink = createSlackPoster({ sinkFile: file });
    const { id, position } = await enqueue({ channel: "C0123ABC", text: "to the sink <@U1>" });
    await withWorker(sink, () => until(position, "Completed"));

    const lines = readFileSync(file, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ channel: "C0123ABC", request: { channel: "C0123ABC", text: "to the sink &lt;@U1&gt;", mrkdwn: false } });
    const succeeded = (await eventsOf(id)).find((e) => e.type === "SucceededInSendingSlackMessageEvent");
    expect(succeeded?.payload).toMatchObject({ channel: "C0123ABC", ts: lines[0].ts });
    expect(standIn.calls).toHaveLength(0);
  });

  it("metadata: every post carries the operation id and the attempt (tidings_message)", async () => {
    standIn.failNext(1, { kind: "httpStatus", status: 503 });
    const { position, op } = await enqueue();
    await withWorker(sdkPoster(), () => until(position, "Completed"));
    expect(standIn.posts.map((p) => p.metadata)).toEqual([{ event_type: "tidings_message", event_payload: { operation_id: op.operationId, attempt: 2 } }]);
    // An HTTP error answer means Slack did not take the message: no look in the history first.
    expect(standIn.calls.map((c) => c.method)).toEqual(["chat.postMessage", "chat.postMessage"]);
  });

  it("a notification's subject reaches Slack exactly as typed, its Markdown as mrkdwn, nothing in either pings or disguises", async () => {
    const subject = "Deploy *done* _now_ ~maybe~ `v2` <!channel> & co";
    const parts = composeSlackParts({
      subject,
      text: "plain",
      markdown: "**Shipped** <!here> [https://bank.example](https://evil.example) and [the log](https://ci.example/1?a=1&b=2)",
    });
    const { position } = await enqueue(parts);
    await withWorker(sdkPoster(), () => until(position, "Completed"));
    expect(standIn.posts).toHaveLength(1);
    expect(standIn.posts[0]).toMatchObject({
      text: "Deploy *done* _now_ ~maybe~ `v2` &lt;!channel&gt; &amp; co\n\nplain",
      mrkdwn: false,
      blocks: [
        { type: "header", text: { type: "plain_text", text: subject } },
        {
          type: "section",
          text: {
            type: "mrkdwn",
            text: "*Shipped* &lt;!here&gt; https://bank.example (<https://evil.example>) and <https://ci.example/1?a=1&amp;b=2|the log>",
          },
        },
      ],
    });
  });

  describe("a send in doubt is not posted twice", () => {
    it("the post reached Slack but the answer never came (timeout): the next attempt finds it in the channel's history and records its ts", async () => {
      standIn.failNext(1, { kind: "postThenHang" });
      const { id, position, op } = await enqueue({ channel: "#deploys" });
      const state = await withWorker(sdkPoster(1_000), () => until(position, "Completed"));

      expect(standIn.postsOf(op.operationId)).toHaveLength(1);
      expect(standIn.posts).toHaveLength(1);
      const post = standIn.posts[0]!;
      expect(state.attempts).toBe(2);
      expect(standIn.calls.map((c) => `${c.method} ${c.answer}`)).toEqual([
        "chat.postMessage posted, no answer",
        // #deploys is a name: its id comes from conversations.list, then the history is read from when the operation was recorded.
        "conversations.list ok",
        "conversations.history ok",
      ]);
      const history = standIn.calls[2]!.args;
      expect(history).toMatchObject({ channel: post.channel, include_all_metadata: "true" });
      expect(Number(history.oldest)).toBeLessThan(Number(post.ts));
      expect(Number(history.limit)).toBeLessThanOrEqual(100);

      const events = await eventsOf(id);
      expect(events.map((e) => e.type)).toEqual([
        "SendSlackMessageRequestedEvent",
        "SendSlackMessageAttemptFailedEvent",
        "SendSlackMessageRequestedEvent",
        "SucceededInSendingSlackMessageEvent",
      ]);
      expect(events[3]!.payload).toEqual({ operationId: op.operationId, attempt: 2, channel: post.channel, ts: post.ts, foundInHistory: true });
      expect((await historyOf(position)).find((h) => h.action === "fail")!.reason).toBe("attempt 1 failed: Slack did not answer in time");
    });

    it("a look-up that fails leaves the send in doubt: the attempt after it looks again rather than post", async () => {
      standIn.failNext(1, { kind: "postThenHang" });
      standIn.failNext(1, { kind: "httpStatus", status: 500 }, "conversations.history");
      const { position, op } = await enqueue({ channel: "C0DEPLOYS" });
      await withWorker(sdkPoster(1_000), () => until(position, "Completed"), { maxAttempts: 4 });

      expect(standIn.postsOf(op.operationId)).toHaveLength(1);
      expect(standIn.calls.map((c) => `${c.method} ${c.answer}`)).toEqual(["chat.postMessage posted, no answer", "conversations.history http 500", "conversations.history ok"]);
      const fails = (await historyOf(position)).filter((h) => h.action === "fail").map((h) => h.reason);
      expect(fails).toEqual(["attempt 1 failed: Slack did not answer in time", `attempt 2 failed: ${LOOKUP_FAILED}: Slack answered HTTP 500 Internal Server Error`]);
    });

    it("connection reset after the post: the look-up follows the cursor through a busy channel, bounded by when the operation was recorded", async () => {
      const { position, op } = await enqueue({ channel: "C0BUSY" });
      standIn.failNext(1, { kind: "postThenHang" });
      const filler = createSlackPoster({ token: standIn.token, apiUrl: standIn.apiUrl, sinkFile: "unused" });
      await withWorker(sdkPoster(30_000), async () => {
        await standIn.waitForPosts(1);
        // 250 messages after ours, before the worker learns anything: ours is on the third page of 100, newest first.
        for (let i = 0; i < 250; i++) await filler.postMessage({ channel: "C0BUSY", text: `noise ${i}` });
        standIn.cutHanging();
        await until(position, "Completed");
      });
      expect(standIn.postsOf(op.operationId)).toHaveLength(1);
      const lookups = standIn.calls.filter((c) => c.method === "conversations.history");
      expect(lookups.map((c) => c.args.cursor === undefined)).toEqual([true, false, false]);
      const fail = (await historyOf(position)).find((h) => h.action === "fail")!;
      expect(fail.reason).toMatch(/^attempt 1 failed: could not reach Slack: /);
    });

    it("without the history scope (missing_scope) the send still goes out: posted again, a duplicate Slack could not rule out", async () => {
      standIn.setScopes(ALL_SCOPES.filter((s) => s !== "channels:history"));
      standIn.failNext(1, { kind: "postThenHang" });
      const { id, position, op } = await enqueue({ channel: "C0NOHISTORY" });
      await withWorker(sdkPoster(1_000), () => until(position, "Completed"));

      expect(standIn.calls.map((c) => `${c.method} ${c.answer}`)).toEqual(["chat.postMessage posted, no answer", "conversations.history missing_scope", "chat.postMessage ok"]);
      expect(standIn.postsOf(op.operationId).map((p) => p.metadata?.event_payload.attempt)).toEqual([1, 2]);
      const succeeded = (await eventsOf(id)).find((e) => e.type === "SucceededInSendingSlackMessageEvent");
      expect(succeeded?.payload).toEqual({ operationId: op.operationId, attempt: 2, channel: "C0NOHISTORY", ts: standIn.posts[1]!.ts });
    });

    it("a first attempt never looks: one call per message", async () => {
      const { position } = await enqueue({ channel: "C0QUIET" });
      await withWorker(sdkPoster(), () => until(position, "Completed"));
      expect(standIn.calls.map((c) => c.method)).toEqual(["chat.postMessage"]);
    });
  });
});
