import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { ReplyHolder, type HoldOptions, type ReplyHold } from "./replyHold";

/**
 * A stand-in for Slack's Web API: a real HTTP server on 127.0.0.1 that speaks
 * enough of it for the official SDK (chat.postMessage, auth.test), so tests
 * exercise the real client, its serialisation and its error handling.
 *
 * Scriptable: `failNext` makes the next calls answer a Slack error, an HTTP
 * status, a 429 with Retry-After, or hang/delay; `rateLimitBurst` answers 429
 * to every call for a while (fault tests). Every request is kept in `calls`;
 * every message actually "posted" in `posts`.
 */

export type StandInReply =
  /** HTTP 200 `{ ok: false, error }`, as Slack answers refused calls. */
  | { kind: "slackError"; error: string; retryAfterSec?: number }
  /** HTTP 429 with `Retry-After: retryAfterSec` (omitted when null: a malformed rate limit). */
  | { kind: "rateLimited"; retryAfterSec: number | null }
  /** Any other HTTP status, e.g. 500 or 503, with an optional body and headers. */
  | { kind: "httpStatus"; status: number; body?: string; headers?: Record<string, string> }
  /** Never answer (the connection stays open until the client gives up or the stand-in closes). */
  | { kind: "hang" }
  /** Answer normally, but only after `ms`. */
  | { kind: "delay"; ms: number };

export interface RecordedCall {
  method: string;
  receivedAt: number;
  headers: http.IncomingHttpHeaders;
  contentType: string;
  /** The parsed arguments (form fields or JSON), JSON-encoded fields such as `blocks` decoded. */
  args: Record<string, unknown>;
  /** What the stand-in answered: "ok", a Slack error code, "http 500", "rate limited", "hang". */
  answer: string;
}

export interface RecordedPost {
  /** The channel as the client gave it (#name or id). */
  requestedChannel: string;
  /** The channel id answered. */
  channel: string;
  ts: string;
  text: string;
  /** Whether Slack would format `text` as mrkdwn (its default is true). */
  mrkdwn: boolean;
  blocks: unknown[] | undefined;
  args: Record<string, unknown>;
  headers: http.IncomingHttpHeaders;
  receivedAt: number;
}

export interface SlackStandInOptions {
  /** The bot token accepted in `Authorization: Bearer`. Default "xoxb-stand-in-token". */
  token?: string;
  /** When given, posting anywhere else answers `channel_not_found`. Entries: #names or ids. */
  knownChannels?: string[];
}

export interface SlackStandIn {
  token: string;
  /** e.g. http://127.0.0.1:PORT/api/ — the SDK's slackApiUrl. */
  apiUrl: string;
  calls: RecordedCall[];
  posts: RecordedPost[];
  /** The next `count` calls of `method` (default chat.postMessage) answer `reply`, in order after those already queued. */
  failNext(count: number, reply: StandInReply, method?: string): void;
  /** Answer 429 with Retry-After to every chat.postMessage for `durationMs` (or until `endRateLimitBurst`). */
  rateLimitBurst(options: { retryAfterSec: number; durationMs?: number }): void;
  endRateLimitBurst(): void;
  /** Resolve once `n` messages have been posted. */
  waitForPosts(n: number, timeoutMs?: number): Promise<RecordedPost[]>;
  /** Forget calls, posts and scripted replies (between tests). */
  reset(): void;
  /**
   * From now on, answer the next `after` calls of `method` (default
   * chat.postMessage) as usual, then take the following `count` (default: all)
   * in full and hold their replies until the hold is released (then a post is
   * posted, even if its client went away) or aborted: a call certainly in
   * flight, for crash tests. Held calls skip the scripted replies.
   */
  holdReplies(options?: HoldOptions & { method?: string }): ReplyHold<RecordedCall>;
  close(): Promise<void>;
}

function channelId(channel: string): string {
  if (!channel.startsWith("#")) return channel;
  // A stable fake id per name, shaped like Slack's: C + 10 upper-case characters.
  return `C${createHash("sha256").update(channel).digest("hex").slice(0, 10).toUpperCase()}`;
}

function parseArgs(raw: string, contentType: string): Record<string, unknown> {
  let args: Record<string, unknown> = {};
  if (contentType.includes("application/json")) {
    const parsed: unknown = raw ? JSON.parse(raw) : {};
    if (typeof parsed === "object" && parsed !== null) args = parsed as Record<string, unknown>;
  } else {
    args = Object.fromEntries(new URLSearchParams(raw));
  }
  // The SDK sends objects and arrays as JSON strings inside form bodies.
  for (const key of ["blocks", "attachments", "metadata"]) {
    const value = args[key];
    if (typeof value === "string") {
      try {
        args[key] = JSON.parse(value);
      } catch {
        // Slack would answer invalid_blocks; keeping the raw string is enough for a stand-in.
      }
    }
  }
  return args;
}

function asBool(value: unknown, fallback: boolean): boolean {
  if (value === undefined || value === null || value === "") return fallback;
  return value === true || value === "true" || value === "1" || value === 1;
}

export async function startSlackStandIn(options: SlackStandInOptions = {}): Promise<SlackStandIn> {
  const token = options.token ?? "xoxb-stand-in-token";
  const known = options.knownChannels ? new Set(options.knownChannels.flatMap((c) => [c, channelId(c)])) : null;
  const calls: RecordedCall[] = [];
  const posts: RecordedPost[] = [];
  let script: { method: string; reply: StandInReply }[] = [];
  let burst: { retryAfterSec: number; until: number } | null = null;
  const hanging = new Set<http.ServerResponse>();
  const delays = new Set<NodeJS.Timeout>();
  // ts values increase strictly, like Slack's within a channel.
  let tsMicros = Math.floor(Date.now() / 1000) * 1e6;
  const postWaiters: (() => void)[] = [];
  let hold: { method: string; holder: ReplyHolder<RecordedCall> } | null = null;

  const json = (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", ...headers });
    res.end(JSON.stringify(body));
  };

  function takeScripted(method: string): StandInReply | undefined {
    if (burst && method === "chat.postMessage") {
      if (Date.now() < burst.until) return { kind: "rateLimited", retryAfterSec: burst.retryAfterSec };
      burst = null;
    }
    const index = script.findIndex((s) => s.method === method);
    if (index < 0) return undefined;
    return script.splice(index, 1)[0]!.reply;
  }

  function answerNormally(res: http.ServerResponse, call: RecordedCall, authorization: string | undefined): void {
    const presented = authorization?.startsWith("Bearer ") ? authorization.slice(7) : (call.args.token as string | undefined);
    if (!presented) return void json(res, 200, { ok: false, error: (call.answer = "not_authed") });
    if (presented !== token) return void json(res, 200, { ok: false, error: (call.answer = "invalid_auth") });

    if (call.method === "auth.test") {
      call.answer = "ok";
      return void json(res, 200, {
        ok: true,
        url: "https://stand-in.slack.com/",
        team: "Stand-in",
        user: "tidings",
        team_id: "T0STANDIN",
        user_id: "U0STANDIN",
        bot_id: "B0STANDIN",
        is_enterprise_install: false,
      });
    }
    if (call.method !== "chat.postMessage") return void json(res, 200, { ok: false, error: (call.answer = "unknown_method") });

    const requested = typeof call.args.channel === "string" ? call.args.channel : "";
    const text = typeof call.args.text === "string" ? call.args.text : "";
    const blocks = Array.isArray(call.args.blocks) ? call.args.blocks : undefined;
    if (!requested) return void json(res, 200, { ok: false, error: (call.answer = "channel_not_found") });
    if (known && !known.has(requested)) return void json(res, 200, { ok: false, error: (call.answer = "channel_not_found") });
    if (!text && !blocks) return void json(res, 200, { ok: false, error: (call.answer = "no_text") });
    if (text.length > 40_000) return void json(res, 200, { ok: false, error: (call.answer = "msg_too_long") });

    tsMicros = Math.max(tsMicros + 1, Date.now() * 1000);
    const ts = `${Math.floor(tsMicros / 1e6)}.${String(tsMicros % 1e6).padStart(6, "0")}`;
    const channel = channelId(requested);
    const post: RecordedPost = {
      requestedChannel: requested,
      channel,
      ts,
      text,
      mrkdwn: asBool(call.args.mrkdwn, true),
      blocks,
      args: call.args,
      headers: call.headers,
      receivedAt: call.receivedAt,
    };
    posts.push(post);
    call.answer = "ok";
    json(res, 200, {
      ok: true,
      channel,
      ts,
      message: { type: "message", user: "U0STANDIN", bot_id: "B0STANDIN", text, ts, ...(blocks ? { blocks } : {}) },
    });
    for (const wake of postWaiters.splice(0)) wake();
  }

  function handle(req: http.IncomingMessage, res: http.ServerResponse, raw: string): void {
    const url = new URL(req.url ?? "/", "http://stand-in");
    const match = /^\/api\/([A-Za-z0-9_.]+)$/.exec(url.pathname);
    if (req.method !== "POST" || !match) return void json(res, 404, { ok: false, error: "not_found" });
    const contentType = String(req.headers["content-type"] ?? "");
    let args: Record<string, unknown>;
    try {
      args = parseArgs(raw, contentType);
    } catch {
      return void json(res, 200, { ok: false, error: "invalid_json" });
    }
    const call: RecordedCall = { method: match[1]!, receivedAt: Date.now(), headers: req.headers, contentType, args, answer: "" };
    calls.push(call);
    const holder = hold?.method === call.method ? hold.holder : null;
    const held = holder?.take(call, () => answerNormally(res, call, req.headers.authorization), () => res.destroy());
    if (held) {
      call.answer = "held";
      return void res.on("close", () => holder!.clientGone(held));
    }

    const reply = takeScripted(call.method);
    switch (reply?.kind) {
      case undefined:
        return answerNormally(res, call, req.headers.authorization);
      case "slackError":
        call.answer = reply.error;
        // The SDK copies a Retry-After header into response_metadata.retryAfter.
        return json(res, 200, { ok: false, error: reply.error }, reply.retryAfterSec === undefined ? {} : { "retry-after": String(reply.retryAfterSec) });
      case "rateLimited":
        call.answer = "rate limited";
        return json(res, 429, { ok: false, error: "ratelimited" }, reply.retryAfterSec === null ? {} : { "retry-after": String(reply.retryAfterSec) });
      case "httpStatus":
        call.answer = `http ${reply.status}`;
        res.writeHead(reply.status, { "content-type": "text/html", ...reply.headers });
        return void res.end(reply.body ?? `<html><body>${reply.status}</body></html>`);
      case "hang":
        call.answer = "hang";
        hanging.add(res);
        res.on("close", () => hanging.delete(res));
        return;
      case "delay": {
        const timer = setTimeout(() => {
          delays.delete(timer);
          answerNormally(res, call, req.headers.authorization);
        }, reply.ms);
        delays.add(timer);
        return;
      }
    }
  }

  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => handle(req, res, Buffer.concat(chunks).toString("utf8")));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    token,
    apiUrl: `http://127.0.0.1:${port}/api/`,
    calls,
    posts,
    failNext(count, reply, method = "chat.postMessage") {
      for (let i = 0; i < count; i++) script.push({ method, reply });
    },
    rateLimitBurst({ retryAfterSec, durationMs }) {
      burst = { retryAfterSec, until: durationMs === undefined ? Number.POSITIVE_INFINITY : Date.now() + durationMs };
    },
    endRateLimitBurst() {
      burst = null;
    },
    async waitForPosts(n, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (posts.length < n) {
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`stand-in: ${posts.length} of ${n} messages posted after ${timeoutMs} ms`);
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, left);
          postWaiters.push(() => {
            clearTimeout(timer);
            resolve();
          });
        });
      }
      return posts.slice(0, n);
    },
    holdReplies(options = {}) {
      if (hold?.holder.holding) throw new Error("stand-in: a hold is already holding replies: release or abort it first");
      const holder = new ReplyHolder<RecordedCall>(
        "Slack stand-in",
        options,
        () => new Promise<number>((resolve, reject) => server.getConnections((err, n) => (err ? reject(err) : resolve(n)))),
        () => `${posts.length} posted`,
      );
      hold = { method: options.method ?? "chat.postMessage", holder };
      return holder.controller();
    },
    reset() {
      calls.length = 0;
      posts.length = 0;
      script = [];
      burst = null;
    },
    async close() {
      hold?.holder.close();
      for (const timer of delays) clearTimeout(timer);
      delays.clear();
      for (const res of hanging) res.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}
