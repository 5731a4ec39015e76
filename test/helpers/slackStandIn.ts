import { createHash } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { ReplyHolder, type HoldOptions, type ReplyHold } from "./replyHold";

/**
 * A stand-in for Slack's Web API: a real HTTP server on 127.0.0.1 that speaks
 * enough of it for the official SDK (chat.postMessage with message metadata,
 * conversations.history, conversations.list, conversations.open, auth.test),
 * so tests exercise the real client, its serialisation and its error
 * handling. Answers follow Slack's documented shapes: history newest first,
 * `oldest`/`latest` exclusive unless `inclusive`, metadata only with
 * `include_all_metadata`, cursor pagination with `has_more` and
 * `response_metadata.next_cursor`, and `missing_scope` (with `needed` and
 * `provided`) for a method whose scope the token lacks (`setScopes`).
 * A message posted to a user id lands in the bot's direct-message channel
 * with them (a D… id), as in Slack.
 *
 * Scriptable: `failNext` makes the next calls answer a Slack error, an HTTP
 * status, a 429 with Retry-After, or hang/delay, or post and then never
 * answer (`postThenHang`: the message exists, the client never learns it);
 * `rateLimitBurst` answers 429 to every call for a while (fault tests). Every
 * request is kept in `calls`; every message actually "posted" in `posts`.
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
  | { kind: "delay"; ms: number }
  /** Post the message (it is in `posts` and in the channel's history) and never answer. */
  | { kind: "postThenHang" };

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
  /** The message metadata as posted (`{ event_type, event_payload }`), if any. */
  metadata: { event_type: string; event_payload: Record<string, unknown> } | undefined;
  args: Record<string, unknown>;
  headers: http.IncomingHttpHeaders;
  receivedAt: number;
}

export interface SlackStandInOptions {
  /** The bot token accepted in `Authorization: Bearer`. Default "xoxb-stand-in-token". */
  token?: string;
  /** When given, posting anywhere else answers `channel_not_found`. Entries: #names or ids. */
  knownChannels?: string[];
  /** The token's scopes (default: every scope tidings can use). */
  scopes?: string[];
}

/** Every scope tidings' Slack client can use. */
export const ALL_SCOPES = ["chat:write", "channels:history", "groups:history", "im:history", "channels:read", "groups:read", "im:write"];

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
  /** Close the connections of calls left hanging: their clients see the connection reset. */
  cutHanging(): void;
  /** Replace the token's scopes (null: every scope again). */
  setScopes(scopes: string[] | null): void;
  /** The posts whose metadata carries this operation id. */
  postsOf(operationId: string): RecordedPost[];
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

const hashId = (prefix: string, of: string) => `${prefix}${createHash("sha256").update(of).digest("hex").slice(0, 10).toUpperCase()}`;

/** The conversation a destination is: a #name's channel (a stable fake id, C + 10 characters), a user's DM (D…), or the id itself. */
function channelId(channel: string): string {
  if (channel.startsWith("#")) return hashId("C", channel);
  if (/^U[A-Z0-9]+$/.test(channel)) return hashId("D", channel);
  return channel;
}

/** The scope a call needs, by method and conversation (null: none the stand-in checks). */
function scopeFor(method: string, args: Record<string, unknown>): string | null {
  const channel = typeof args.channel === "string" ? args.channel : "";
  switch (method) {
    case "chat.postMessage":
      return "chat:write";
    case "conversations.history":
      return channel.startsWith("D") ? "im:history" : channel.startsWith("G") ? "groups:history" : "channels:history";
    case "conversations.list":
      return String(args.types ?? "public_channel").includes("private_channel") ? "groups:read" : "channels:read";
    case "conversations.open":
      return "im:write";
    default:
      return null;
  }
}

/** Cursors are opaque to clients; here they encode the offset of the next page. */
const encodeCursor = (offset: number) => Buffer.from(`offset:${offset}`).toString("base64");
function decodeCursor(cursor: unknown): number | null {
  if (typeof cursor !== "string" || cursor === "") return 0;
  const match = /^offset:(\d+)$/.exec(Buffer.from(cursor, "base64").toString("utf8"));
  return match ? Number(match[1]) : null;
}

function pageOf<T>(items: T[], args: Record<string, unknown>, defaultLimit: number, maxLimit: number) {
  const offset = decodeCursor(args.cursor);
  if (offset === null) return null;
  const requested = Number(args.limit ?? defaultLimit);
  const limit = Math.min(Number.isFinite(requested) && requested > 0 ? requested : defaultLimit, maxLimit);
  const page = items.slice(offset, offset + limit);
  const more = offset + limit < items.length;
  return { page, has_more: more, response_metadata: { next_cursor: more ? encodeCursor(offset + limit) : "" } };
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
  let scopes = new Set(options.scopes ?? ALL_SCOPES);
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

  function answerNormally(res: http.ServerResponse, call: RecordedCall, authorization: string | undefined, hangAfterPost = false): void {
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
    const needed = scopeFor(call.method, call.args);
    if (needed !== null && !scopes.has(needed)) {
      call.answer = "missing_scope";
      return void json(res, 200, { ok: false, error: "missing_scope", needed, provided: [...scopes].join(",") });
    }
    if (call.method === "conversations.history") return answerHistory(res, call);
    if (call.method === "conversations.list") return answerList(res, call);
    if (call.method === "conversations.open") {
      const user = typeof call.args.users === "string" ? call.args.users : "";
      if (!/^U[A-Z0-9]+$/.test(user)) return void json(res, 200, { ok: false, error: (call.answer = "user_not_found") });
      call.answer = "ok";
      return void json(res, 200, { ok: true, channel: { id: channelId(user) } });
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
    const metadata = call.args.metadata as RecordedPost["metadata"];
    const post: RecordedPost = {
      requestedChannel: requested,
      channel,
      ts,
      text,
      mrkdwn: asBool(call.args.mrkdwn, true),
      blocks,
      metadata: metadata && typeof metadata === "object" ? metadata : undefined,
      args: call.args,
      headers: call.headers,
      receivedAt: call.receivedAt,
    };
    posts.push(post);
    call.answer = "ok";
    for (const wake of postWaiters.splice(0)) wake();
    if (hangAfterPost) {
      call.answer = "posted, no answer";
      hanging.add(res);
      res.on("close", () => hanging.delete(res));
      return;
    }
    json(res, 200, {
      ok: true,
      channel,
      ts,
      message: { type: "message", user: "U0STANDIN", bot_id: "B0STANDIN", text, ts, ...(blocks ? { blocks } : {}) },
    });
  }

  /** conversations.history: the channel's messages newest first, within oldest/latest, a page at a time. */
  function answerHistory(res: http.ServerResponse, call: RecordedCall): void {
    const channel = typeof call.args.channel === "string" ? call.args.channel : "";
    // Slack wants a conversation id here; a #name is not one.
    const exists = /^[CGD][A-Z0-9]+$/.test(channel) && (!known || known.has(channel) || posts.some((p) => p.channel === channel));
    if (!exists) return void json(res, 200, { ok: false, error: (call.answer = "channel_not_found") });
    const inclusive = asBool(call.args.inclusive, false);
    const oldest = call.args.oldest === undefined ? 0 : Number(call.args.oldest);
    const latest = call.args.latest === undefined ? Number.POSITIVE_INFINITY : Number(call.args.latest);
    if (!Number.isFinite(oldest)) return void json(res, 200, { ok: false, error: (call.answer = "invalid_ts_oldest") });
    const withMetadata = asBool(call.args.include_all_metadata, false);
    const messages = posts
      .filter((p) => p.channel === channel)
      .filter((p) => {
        const ts = Number(p.ts);
        return (inclusive ? ts >= oldest : ts > oldest) && (inclusive ? ts <= latest : ts < latest);
      })
      .reverse()
      .map((p) => ({
        type: "message",
        subtype: "bot_message",
        user: "U0STANDIN",
        bot_id: "B0STANDIN",
        text: p.text,
        ts: p.ts,
        ...(p.blocks ? { blocks: p.blocks } : {}),
        ...(withMetadata && p.metadata ? { metadata: p.metadata } : {}),
      }));
    const page = pageOf(messages, call.args, 100, 999);
    if (!page) return void json(res, 200, { ok: false, error: (call.answer = "invalid_cursor") });
    call.answer = "ok";
    json(res, 200, { ok: true, messages: page.page, has_more: page.has_more, pin_count: 0, response_metadata: page.response_metadata });
  }

  /** conversations.list: the channels known or posted to by #name. */
  function answerList(res: http.ServerResponse, call: RecordedCall): void {
    const names = new Set([...(options.knownChannels ?? []), ...posts.map((p) => p.requestedChannel)].filter((c) => c.startsWith("#")));
    const channels = [...names].sort().map((name) => ({
      id: channelId(name),
      name: name.slice(1),
      is_channel: true,
      is_private: false,
      is_archived: false,
      is_member: true,
    }));
    const page = pageOf(channels, call.args, 100, 1000);
    if (!page) return void json(res, 200, { ok: false, error: (call.answer = "invalid_cursor") });
    call.answer = "ok";
    json(res, 200, { ok: true, channels: page.page, response_metadata: page.response_metadata });
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
    const held = holder?.take(
      call,
      () => answerNormally(res, call, req.headers.authorization),
      () => res.destroy(),
    );
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
      case "postThenHang":
        return answerNormally(res, call, req.headers.authorization, true);
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
    cutHanging() {
      for (const res of hanging) res.destroy();
    },
    setScopes(list) {
      scopes = new Set(list ?? ALL_SCOPES);
    },
    postsOf(operationId) {
      return posts.filter((p) => p.metadata?.event_payload.operation_id === operationId);
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
      scopes = new Set(options.scopes ?? ALL_SCOPES);
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
