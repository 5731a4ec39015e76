import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ExternalError } from "../../src/errors/errors";
import { classifySlackError, createSlackPoster, mayHaveBeenPosted, type SlackPoster } from "../../src/slack/client";
import { ALL_SCOPES, startSlackStandIn, type SlackStandIn } from "../helpers/slackStandIn";

/** The poster with the real SDK against the stand-in: what goes over the wire and what comes back. */

let standIn: SlackStandIn;
let poster: SlackPoster;
let tmp: string;

beforeAll(async () => {
  standIn = await startSlackStandIn();
  tmp = mkdtempSync(path.join(os.tmpdir(), "tidings-slack-"));
});
afterAll(async () => {
  await standIn.close();
  rmSync(tmp, { recursive: true, force: true });
});
beforeEach(() => {
  standIn.reset();
  poster = createSlackPoster({ token: standIn.token, apiUrl: standIn.apiUrl, sinkFile: path.join(tmp, "unused.jsonl"), timeoutMs: 2_000 });
});

async function failureOf(promise: Promise<unknown>): Promise<ExternalError> {
  try {
    await promise;
  } catch (error) {
    return classifySlackError(error);
  }
  throw new Error("expected the post to fail");
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe("createSlackPoster with a token (the SDK)", () => {
  it("describes itself without the token", () => {
    expect(poster.describe()).toBe(`Slack Web API at ${standIn.apiUrl} (chat.postMessage via @slack/bolt's WebClient)`);
    expect(poster.describe()).not.toContain(standIn.token);
  });

  it("posts with the bearer token, escaped text and mrkdwn off; returns Slack's channel id and ts", async () => {
    const first = await poster.postMessage({ channel: "#ops", text: "hello <!channel> & co" });
    const second = await poster.postMessage({ channel: "C0123ABC", text: "again" });
    expect(first.channel).toMatch(/^C[0-9A-F]{10}$/);
    expect(second).toEqual({ channel: "C0123ABC", ts: expect.any(String) });
    expect(Number(second.ts)).toBeGreaterThan(Number(first.ts));
    const [post] = standIn.posts;
    expect(post).toMatchObject({ requestedChannel: "#ops", channel: first.channel, ts: first.ts, text: "hello &lt;!channel&gt; &amp; co", mrkdwn: false });
    expect(post!.headers.authorization).toBe(`Bearer ${standIn.token}`);
    expect(post!.headers["user-agent"]).toMatch(/@slack:web-api/);
    expect(standIn.calls[0]!.contentType).toBe("application/x-www-form-urlencoded");
  });

  it("sends a mrkdwn body as a section block with the plain text as fallback", async () => {
    await poster.postMessage({ channel: "#ops", text: "Deploy done", mrkdwn: "*Deploy* done <https://ci.example/1|build 1>" });
    expect(standIn.posts[0]).toMatchObject({
      text: "Deploy done",
      // The fallback is plain text: never formatted (it was formatted as mrkdwn before).
      mrkdwn: false,
      blocks: [{ type: "section", text: { type: "mrkdwn", text: "*Deploy* done <https://ci.example/1|build 1>" } }],
    });
  });

  it("a wrong token → invalid_auth, permanent", async () => {
    const wrong = createSlackPoster({ token: "xoxb-wrong", apiUrl: standIn.apiUrl, sinkFile: "unused" });
    const e = await failureOf(wrong.postMessage({ channel: "#ops", text: "hi" }));
    expect(e.transient).toBe(false);
    expect(e.details).toMatchObject({ slackError: "invalid_auth", httpStatus: 200 });
  });

  it("a 429 is returned at once with Retry-After, not waited for or retried by the SDK", async () => {
    standIn.failNext(1, { kind: "rateLimited", retryAfterSec: 30 });
    const started = Date.now();
    const e = await failureOf(poster.postMessage({ channel: "#ops", text: "hi" }));
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(e.transient).toBe(true);
    expect(e.retryAfterMs).toBe(30_000);
    expect(e.details).toMatchObject({ slackError: "ratelimited", httpStatus: 429 });
    expect(standIn.calls).toHaveLength(1);
  });

  it("a 429 without a usable Retry-After → transient, no retry inside the SDK", async () => {
    standIn.failNext(1, { kind: "rateLimited", retryAfterSec: null });
    const e = await failureOf(poster.postMessage({ channel: "#ops", text: "hi" }));
    expect(e.transient).toBe(true);
    expect(e.retryAfterMs).toBeUndefined();
    expect(standIn.calls).toHaveLength(1);
  });

  it("HTTP 500 → transient with the status, one request only", async () => {
    standIn.failNext(1, { kind: "httpStatus", status: 500 });
    const e = await failureOf(poster.postMessage({ channel: "#ops", text: "hi" }));
    expect(e.transient).toBe(true);
    expect(e.details).toMatchObject({ httpStatus: 500, slackError: null });
    expect(standIn.calls).toHaveLength(1);
  });

  it("a Slack error scripted for chat.postMessage: channel_not_found → permanent", async () => {
    standIn.failNext(1, { kind: "slackError", error: "channel_not_found" });
    const e = await failureOf(poster.postMessage({ channel: "#nowhere", text: "hi" }));
    expect(e.transient).toBe(false);
    expect(e.details).toMatchObject({ slackError: "channel_not_found" });
    expect(standIn.posts).toHaveLength(0);
  });

  it("internal_error with Retry-After → transient after that delay", async () => {
    standIn.failNext(1, { kind: "slackError", error: "internal_error", retryAfterSec: 2 });
    const e = await failureOf(poster.postMessage({ channel: "#ops", text: "hi" }));
    expect(e.transient).toBe(true);
    expect(e.retryAfterMs).toBe(2_000);
  });

  it("no answer within timeoutMs → transient timeout", async () => {
    standIn.failNext(1, { kind: "hang" });
    const quick = createSlackPoster({ token: standIn.token, apiUrl: standIn.apiUrl, sinkFile: "unused", timeoutMs: 200 });
    const e = await failureOf(quick.postMessage({ channel: "#ops", text: "hi" }));
    expect(e.transient).toBe(true);
    expect(e.message).toBe("Slack did not answer in time");
  });

  it("a delayed answer within the timeout is delivered", async () => {
    standIn.failNext(1, { kind: "delay", ms: 150 });
    const started = Date.now();
    await poster.postMessage({ channel: "#ops", text: "hi" });
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
    expect(standIn.posts).toHaveLength(1);
  });

  it("connection refused → transient with ECONNREFUSED kept", async () => {
    const port = await closedPort();
    const offline = createSlackPoster({ token: "xoxb-x", apiUrl: `http://127.0.0.1:${port}/api/`, sinkFile: "unused" });
    const e = await failureOf(offline.postMessage({ channel: "#ops", text: "hi" }));
    expect(e.transient).toBe(true);
    expect(e.details).toMatchObject({ networkCode: "ECONNREFUSED", httpStatus: null });
    expect(e.message).toMatch(/could not reach Slack: .*ECONNREFUSED/);
  });

  it("gives up at once when the worker's abort signal fires", async () => {
    standIn.failNext(1, { kind: "hang" });
    const controller = new AbortController();
    const pending = poster.postMessage({ channel: "#ops", text: "hi" }, controller.signal);
    setTimeout(() => controller.abort(new Error("worker stopping")), 50);
    const e = await failureOf(pending);
    expect(e.transient).toBe(true);
    expect(e.message).toContain("worker stopping");
  });
});

describe("the stand-in itself", () => {
  it("accepts JSON bodies and answers auth.test", async () => {
    const headers = { authorization: `Bearer ${standIn.token}`, "content-type": "application/json; charset=utf-8" };
    const post = await fetch(`${standIn.apiUrl}chat.postMessage`, {
      method: "POST",
      headers,
      body: JSON.stringify({ channel: "C0123ABC", text: "json", mrkdwn: false }),
    }).then((r) => r.json());
    expect(post).toMatchObject({ ok: true, channel: "C0123ABC", message: { text: "json" } });
    expect(standIn.posts[0]).toMatchObject({ text: "json", mrkdwn: false });
    const auth = await fetch(`${standIn.apiUrl}auth.test`, { method: "POST", headers, body: "{}" }).then((r) => r.json());
    expect(auth).toMatchObject({ ok: true, team_id: "T0STANDIN" });
  });

  it("a burst of 429s answers every post until it ends", async () => {
    standIn.rateLimitBurst({ retryAfterSec: 1 });
    for (let i = 0; i < 3; i++) expect((await failureOf(poster.postMessage({ channel: "#ops", text: `${i}` }))).retryAfterMs).toBe(1_000);
    standIn.endRateLimitBurst();
    await poster.postMessage({ channel: "#ops", text: "through" });
    expect(standIn.calls.map((c) => c.answer)).toEqual(["rate limited", "rate limited", "rate limited", "ok"]);
  });

  it("knownChannels: any other channel is channel_not_found", async () => {
    const strict = await startSlackStandIn({ knownChannels: ["#ops"] });
    try {
      const p = createSlackPoster({ token: strict.token, apiUrl: strict.apiUrl, sinkFile: "unused" });
      await p.postMessage({ channel: "#ops", text: "ok" });
      expect((await failureOf(p.postMessage({ channel: "#elsewhere", text: "no" }))).details.slackError).toBe("channel_not_found");
    } finally {
      await strict.close();
    }
  });
});

describe("createSlackPoster without a token (the local sink)", () => {
  it("appends one JSON line per message, creating the directory", async () => {
    const file = path.join(tmp, "nested", "dir", "slack.jsonl");
    const sink = createSlackPoster({ token: "  ", sinkFile: path.relative(process.cwd(), file) });
    expect(sink.describe()).toContain(file);
    expect(sink.describe()).toMatch(/local Slack sink/);
    const a = await sink.postMessage({ channel: "#ops", text: "one <b>" });
    const b = await sink.postMessage({ channel: "C0123ABC", text: "two", mrkdwn: "*two*" });
    expect(a.channel).toBe("#ops");
    expect(Number(b.ts)).toBeGreaterThan(Number(a.ts));
    const lines = readFileSync(file, "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ ts: a.ts, channel: "#ops", request: { text: "one &lt;b&gt;", mrkdwn: false } });
    expect(lines[1].request.blocks[0].text.text).toBe("*two*");
  });
});

describe("findPosted: is the message of an operation already in the channel?", () => {
  const since = () => new Date(Date.now() - 5_000);

  it("finds it by the operation id in its metadata, for a channel id, a #name and a user (their DM)", async () => {
    for (const channel of ["C0FIND", "#find-me", "U0FINDME"]) {
      const posted = await poster.postMessage({ channel, text: "hello", operationId: `op-${channel}`, attempt: 1 });
      await poster.postMessage({ channel, text: "another", operationId: "op-other", attempt: 1 });
      // A fresh poster has learnt no channel ids from posts: it must look them up as a new worker would.
      const fresh = createSlackPoster({ token: standIn.token, apiUrl: standIn.apiUrl, sinkFile: "unused" });
      expect(await fresh.findPosted({ channel, operationId: `op-${channel}`, since: since() })).toEqual({ status: "found", post: posted });
      expect(await fresh.findPosted({ channel, operationId: "op-never", since: since() })).toEqual({ status: "absent" });
    }
    expect(standIn.calls.filter((c) => c.method === "conversations.open").map((c) => c.args.users)).toEqual(["U0FINDME"]);
    expect(standIn.calls.filter((c) => c.method === "conversations.list")).toHaveLength(1);
  });

  it("messages posted before `since` (minus a minute for clocks) are not looked at", async () => {
    await poster.postMessage({ channel: "C0OLD", text: "old", operationId: "op-old" });
    const later = new Date(Date.now() + 120_000);
    expect(await poster.findPosted({ channel: "C0OLD", operationId: "op-old", since: later })).toEqual({ status: "absent" });
  });

  it("a missing scope is 'unchecked' with the scope named, not an error", async () => {
    standIn.setScopes(ALL_SCOPES.filter((scope) => scope !== "channels:history"));
    expect(await poster.findPosted({ channel: "C0SCOPE", operationId: "op", since: since() })).toEqual({
      status: "unchecked",
      key: "conversations.history:missing_scope",
      reason: "Slack refused conversations.history: missing_scope (needs channels:history)",
    });
    standIn.setScopes(["chat:write"]);
    expect(await poster.findPosted({ channel: "#somewhere", operationId: "op", since: since() })).toMatchObject({
      status: "unchecked",
      reason: "Slack refused conversations.list: missing_scope (needs groups:read)",
    });
  });

  it("Slack failing to answer the look-up is a transient error saying so", async () => {
    standIn.failNext(1, { kind: "httpStatus", status: 503 }, "conversations.history");
    const e = await poster.findPosted({ channel: "C0DOWN", operationId: "op", since: since() }).then(
      () => null,
      (error: unknown) => error as ExternalError,
    );
    expect(e).toBeInstanceOf(ExternalError);
    expect(e!.transient).toBe(true);
    expect(e!.message).toBe("could not look for an earlier post in Slack: Slack answered HTTP 503 Service Unavailable");
    expect(mayHaveBeenPosted(e!.message)).toBe(true);
  });

  it("the local sink finds its own lines", async () => {
    const sink = createSlackPoster({ sinkFile: path.join(tmp, "find", "slack.jsonl") });
    expect(await sink.findPosted({ channel: "#ops", operationId: "op-1", since: since() })).toEqual({ status: "absent" });
    const posted = await sink.postMessage({ channel: "#ops", text: "one", operationId: "op-1", attempt: 1 });
    expect(await sink.findPosted({ channel: "#ops", operationId: "op-1", since: since() })).toEqual({ status: "found", post: posted });
    expect(await sink.findPosted({ channel: "#other", operationId: "op-1", since: since() })).toEqual({ status: "absent" });
  });
});

describe("mayHaveBeenPosted: which failures leave a send in doubt", () => {
  it("in doubt: timeouts, resets after sending, a stop mid-request, failed look-ups", async () => {
    standIn.failNext(1, { kind: "hang" });
    const timeout = await failureOf(
      createSlackPoster({ token: standIn.token, apiUrl: standIn.apiUrl, sinkFile: "unused", timeoutMs: 200 }).postMessage({ channel: "#ops", text: "x" }),
    );
    standIn.failNext(1, { kind: "postThenHang" });
    const pending = failureOf(poster.postMessage({ channel: "#ops", text: "y" }));
    await standIn.waitForPosts(1);
    standIn.cutHanging();
    const reset = await pending;
    for (const e of [timeout, reset]) expect({ message: e.message, inDoubt: mayHaveBeenPosted(e.message) }).toEqual({ message: e.message, inDoubt: true });
    expect(mayHaveBeenPosted("could not reach Slack: Slack request abandoned: worker stopping")).toBe(true);
    expect(mayHaveBeenPosted("could not look for an earlier post in Slack: Slack rate-limited conversations.history")).toBe(true);
  });

  it("not in doubt: Slack refused, rate-limited or answered an HTTP error, or no connection was made", async () => {
    const port = await closedPort();
    const refused = await failureOf(
      createSlackPoster({ token: standIn.token, apiUrl: `http://127.0.0.1:${port}/api/`, sinkFile: "unused" }).postMessage({ channel: "#ops", text: "x" }),
    );
    standIn.failNext(1, { kind: "slackError", error: "channel_not_found" });
    const platform = await failureOf(poster.postMessage({ channel: "#ops", text: "x" }));
    standIn.failNext(1, { kind: "rateLimited", retryAfterSec: 1 });
    const limited = await failureOf(poster.postMessage({ channel: "#ops", text: "x" }));
    standIn.failNext(1, { kind: "httpStatus", status: 502 });
    const http = await failureOf(poster.postMessage({ channel: "#ops", text: "x" }));
    for (const e of [refused, platform, limited, http]) expect({ message: e.message, inDoubt: mayHaveBeenPosted(e.message) }).toEqual({ message: e.message, inDoubt: false });
    expect(mayHaveBeenPosted(null)).toBe(false);
  });
});
