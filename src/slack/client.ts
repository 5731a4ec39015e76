import { appendFile, mkdir, readFile } from "node:fs/promises";
import path from "node:path";
import { webApi } from "@slack/bolt";
import { ExternalError } from "../errors/errors";
import type { Logger } from "../logging/logger";
import { TIDINGS_EVENT_TYPE, buildPostMessageArgs } from "./format";

import type { SlackMessageParts } from "./format";

/** A message to post (format.ts builds the Web API's arguments from it). */
export type SlackMessage = SlackMessageParts;

export interface PostResult {
  /** The channel id Slack posted to (Slack answers C…/D… ids even for #names). */
  channel: string;
  /** The message's timestamp: its id within the channel. */
  ts: string;
}

/** What a look for an earlier post of an operation found. */
export type FindPostedResult =
  | { status: "found"; post: PostResult }
  | { status: "absent" }
  /** Slack could not be asked (a scope missing, the bot not in the channel, a history too long): `key` names the reason for logging once. */
  | { status: "unchecked"; key: string; reason: string };

export interface SlackPoster {
  /** Which poster this is, for the startup log: the Web API URL or the sink's absolute path. */
  describe(): string;
  postMessage(msg: SlackMessage, signal?: AbortSignal): Promise<PostResult>;
  /**
   * Look in `channel` for a message posted since `since` whose metadata
   * carries `operationId`. Throws an ExternalError (transient) when Slack
   * could not answer now; answers "unchecked" when it cannot be asked at all.
   */
  findPosted(query: { channel: string; operationId: string; since: Date }, signal?: AbortSignal): Promise<FindPostedResult>;
}

export interface SlackPosterOptions {
  /** A bot token (xoxb-…). Without one, messages go to the local sink. */
  token?: string;
  /** Web API base URL; tests point it at a local stand-in. Default https://slack.com/api/. */
  apiUrl?: string;
  /** JSON-lines file the local sink appends to. */
  sinkFile: string;
  /**
   * Destinations the local sink answers `channel_not_found` for, as Slack does
   * for a channel that is gone: to try fallbacks and failure alerts without
   * Slack (SLACK_SINK_MISSING_CHANNELS).
   */
  sinkMissingChannels?: readonly string[];
  /** Per-request timeout. Default 10 s. */
  timeoutMs?: number;
  /** Where the SDK's own log lines go; by default only its errors reach stderr. */
  logger?: Logger;
}

export const DEFAULT_SLACK_API_URL = "https://slack.com/api/";
const DEFAULT_TIMEOUT_MS = 10_000;

export function createSlackPoster(options: SlackPosterOptions): SlackPoster {
  const token = options.token?.trim();
  return token ? new WebApiPoster(token, options) : new SinkPoster(options.sinkFile, options.sinkMissingChannels ?? []);
}

/** Adapt pino to the SDK's logger interface. */
function sdkLogger(logger: Logger): webApi.Logger {
  const child = logger.child({ component: "slack-web-api" });
  return {
    debug: (...msg) => child.debug(msg.map(String).join(" ")),
    info: (...msg) => child.info(msg.map(String).join(" ")),
    warn: (...msg) => child.warn(msg.map(String).join(" ")),
    error: (...msg) => child.error(msg.map(String).join(" ")),
    setLevel: () => {},
    getLevel: () => webApi.LogLevel.DEBUG,
    setName: () => {},
  };
}

/** Rejects as soon as `signal` aborts (the worker is shutting down); the request itself ends by its timeout. */
function abortable<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortError(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

function abortError(signal: AbortSignal): Error {
  const error = new Error(`Slack request abandoned: ${String(signal.reason ?? "aborted")}`);
  error.name = "AbortError";
  return error;
}

/**
 * fetch as the SDK uses it, but failures keep what happened: fetch rejects
 * with TypeError("fetch failed") and hides "connect ECONNREFUSED …" in its
 * cause, which the SDK's error message drops (and which is lost altogether
 * when the error comes from another realm, as under jest). The error thrown
 * here carries the cause's message, its system code and the original name
 * (TimeoutError for the SDK's timeout).
 */
const fetchKeepingCauses: webApi.FetchFunction = async (url, init) => {
  try {
    return await globalThis.fetch(url, init);
  } catch (thrown) {
    const e = asObject(thrown);
    const cause = asObject(e?.cause);
    const message = typeof e?.message === "string" ? e.message : String(thrown);
    const causeMessage = typeof cause?.message === "string" && cause.message ? `: ${cause.message}` : "";
    const error = new Error(`${message}${causeMessage}`, { cause: thrown });
    error.name = typeof e?.name === "string" ? e.name : "Error";
    const code = networkCode(thrown);
    if (code) Object.assign(error, { code });
    throw error;
  }
};

/** chat.postMessage through the Web API client that @slack/bolt ships. No Bolt App, so no receiver or socket is started. */
class WebApiPoster implements SlackPoster {
  private readonly client: webApi.WebClient;
  private readonly apiUrl: string;

  constructor(token: string, options: SlackPosterOptions) {
    this.apiUrl = options.apiUrl?.trim() || DEFAULT_SLACK_API_URL;
    this.client = new webApi.WebClient(token, {
      slackApiUrl: this.apiUrl,
      // tidings' runner retries with backoff and records every attempt in the
      // handling history; retries inside the SDK would hide attempts and hold
      // a worker slot for minutes.
      retryConfig: { retries: 0 },
      // A 429 comes back as an error carrying Retry-After instead of the SDK
      // sleeping and pausing its queue; the runner schedules the retry.
      rejectRateLimitedCalls: true,
      timeout: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      fetch: fetchKeepingCauses,
      ...(options.logger ? { logger: sdkLogger(options.logger) } : { logLevel: webApi.LogLevel.ERROR }),
    });
  }

  describe(): string {
    return `Slack Web API at ${this.apiUrl} (chat.postMessage via @slack/bolt's WebClient)`;
  }

  async postMessage(msg: SlackMessage, signal?: AbortSignal): Promise<PostResult> {
    const result = await abortable(this.client.chat.postMessage(buildPostMessageArgs(msg)), signal);
    if (typeof result.channel !== "string" || typeof result.ts !== "string") {
      // Slack said ok, so the message may exist: do not retry and risk a duplicate.
      throw new ExternalError("Slack accepted chat.postMessage but answered without channel and ts", false, {
        slackError: null,
        httpStatus: 200,
      });
    }
    this.conversationIds.set(msg.channel, result.channel);
    return { channel: result.channel, ts: result.ts };
  }

  /** Destinations (#names, user ids) and the conversation ids Slack posted them to, learnt from posts and look-ups. */
  private readonly conversationIds = new Map<string, string>();

  async findPosted(query: { channel: string; operationId: string; since: Date }, signal?: AbortSignal): Promise<FindPostedResult> {
    const conversation = await this.conversationId(query.channel, signal);
    if (typeof conversation !== "string") return conversation;
    // Slack's ts are seconds since the epoch; a minute of margin for clocks that disagree.
    const oldest = (Math.floor(query.since.getTime() / 1000) - CLOCK_MARGIN_S).toFixed(6);
    let cursor: string | undefined;
    for (let page = 1; page <= HISTORY_MAX_PAGES; page++) {
      const result = await this.call("conversations.history", signal, () =>
        this.client.conversations.history({
          channel: conversation,
          oldest,
          limit: HISTORY_PAGE_SIZE,
          include_all_metadata: true,
          ...(cursor ? { cursor } : {}),
        }),
      );
      if ("status" in result) return result;
      for (const message of result.messages ?? []) {
        const metadata = message.metadata as { event_type?: unknown; event_payload?: Record<string, unknown> } | undefined;
        if (metadata?.event_type === TIDINGS_EVENT_TYPE && metadata.event_payload?.operation_id === query.operationId && typeof message.ts === "string") {
          return { status: "found", post: { channel: conversation, ts: message.ts } };
        }
      }
      cursor = result.response_metadata?.next_cursor || undefined;
      if (!result.has_more || !cursor) return { status: "absent" };
    }
    return {
      status: "unchecked",
      key: "history-too-long",
      reason: `more than ${HISTORY_MAX_PAGES} pages of history since the operation was recorded; stopped looking`,
    };
  }

  /**
   * The conversation id conversations.history needs. Channel ids as they
   * are; a user id is the bot's direct-message channel with them
   * (conversations.open); a #name is looked up in conversations.list. Both
   * answers are kept for the life of the process.
   */
  private async conversationId(channel: string, signal?: AbortSignal): Promise<string | FindPostedResult> {
    if (/^[CGD][A-Z0-9]+$/.test(channel)) return channel;
    const known = this.conversationIds.get(channel);
    if (known) return known;
    if (/^U[A-Z0-9]+$/.test(channel)) {
      const opened = await this.call("conversations.open", signal, () => this.client.conversations.open({ users: channel }));
      if ("status" in opened) return opened;
      const id = opened.channel?.id;
      if (!id) return { status: "unchecked", key: "open-no-id", reason: `conversations.open answered no channel for ${channel}` };
      this.conversationIds.set(channel, id);
      return id;
    }
    const name = channel.replace(/^#/, "");
    let cursor: string | undefined;
    for (let page = 1; page <= LIST_MAX_PAGES; page++) {
      const result = await this.call("conversations.list", signal, () =>
        this.client.conversations.list({
          types: "public_channel,private_channel",
          exclude_archived: true,
          limit: LIST_PAGE_SIZE,
          ...(cursor ? { cursor } : {}),
        }),
      );
      if ("status" in result) return result;
      const match = result.channels?.find((c) => c.name === name);
      if (match?.id) {
        this.conversationIds.set(channel, match.id);
        return match.id;
      }
      cursor = result.response_metadata?.next_cursor || undefined;
      if (!cursor) break;
    }
    return { status: "unchecked", key: `no-channel:${channel}`, reason: `no channel named ${channel} in conversations.list` };
  }

  /**
   * One look-up call. Answers Slack gives when the token may not read there
   * (a scope missing, the bot not in the channel) become "unchecked": they
   * must not block sending. Failures that may pass throw, classified.
   */
  private async call<T>(method: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T | FindPostedResult> {
    try {
      return await abortable(fn(), signal);
    } catch (thrown) {
      const error = classifySlackError(thrown, method);
      if (!error.transient) {
        const slackError = typeof error.details.slackError === "string" ? error.details.slackError : `http ${String(error.details.httpStatus)}`;
        const needed = typeof error.details.needed === "string" ? ` (needs ${error.details.needed})` : "";
        return { status: "unchecked", key: `${method}:${slackError}`, reason: `${error.message}${needed}` };
      }
      throw lookupFailed(error);
    }
  }
}

/** conversations.history pages read, and their size, when looking for an earlier post. */
const HISTORY_PAGE_SIZE = 100;
const HISTORY_MAX_PAGES = 10;
/** conversations.list pages read to find a #name's id. */
const LIST_PAGE_SIZE = 200;
const LIST_MAX_PAGES = 10;
const CLOCK_MARGIN_S = 60;

/** The start of the message of a failure to look for an earlier post: such an attempt is still in doubt. */
export const LOOKUP_FAILED = "could not look for an earlier post in Slack";

export function lookupFailed(error: ExternalError): ExternalError {
  return new ExternalError(`${LOOKUP_FAILED}: ${error.message}`, error.transient, { ...error.details, lookup: true }, error.retryAfterMs, {
    cause: error,
  });
}

/**
 * Whether an attempt that failed with this error may have posted anyway:
 * every failure but those where Slack (or the network) says the message was
 * not taken: a refusal (`ok: false`), a rate limit, an HTTP error answer, a
 * connection that was never made. A timeout, a connection reset after the
 * request went out, a worker stopping mid-request, or a failed look-up for
 * an earlier post leave it in doubt.
 */
export function mayHaveBeenPosted(lastError: string | null): boolean {
  if (lastError === null) return false;
  return !NOT_POSTED.some((pattern) => pattern.test(lastError));
}

const NOT_POSTED = [
  /^Slack refused chat\.postMessage: /,
  /^Slack rate-limited chat\.postMessage/,
  /^Slack answered HTTP \d/,
  /^could not reach Slack: .*\b(?:connect E[A-Z]+|ECONNREFUSED|ENOTFOUND|EAI_AGAIN|EHOSTUNREACH|ENETUNREACH|UND_ERR_CONNECT_TIMEOUT|getaddrinfo)\b/,
];

let lastSinkMicros = 0;

/** A Slack-like ts ("seconds.micros"), increasing within the process. */
function syntheticTs(): string {
  lastSinkMicros = Math.max(lastSinkMicros + 1, Date.now() * 1000);
  return `${Math.floor(lastSinkMicros / 1e6)}.${String(lastSinkMicros % 1e6).padStart(6, "0")}`;
}

/** Without a token: one JSON line per message in a local file, so a default run works end to end. */
class SinkPoster implements SlackPoster {
  private readonly file: string;
  private readonly missing: ReadonlySet<string>;

  constructor(file: string, missing: readonly string[]) {
    this.file = path.resolve(file);
    this.missing = new Set(missing);
  }

  describe(): string {
    const gone = this.missing.size > 0 ? `; answers channel_not_found for ${[...this.missing].join(", ")}` : "";
    return `local Slack sink (no Slack token set): one JSON line per message appended to ${this.file}${gone}`;
  }

  async findPosted(query: { channel: string; operationId: string; since: Date }, signal?: AbortSignal): Promise<FindPostedResult> {
    if (signal?.aborted) throw abortError(signal);
    let content: string;
    try {
      content = await readFile(this.file, "utf8");
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return { status: "absent" };
      throw error;
    }
    for (const line of content.split("\n")) {
      if (!line.includes(query.operationId)) continue;
      try {
        const parsed = JSON.parse(line) as { ts?: string; channel?: string; request?: { metadata?: { event_payload?: { operation_id?: string } } } };
        if (parsed.request?.metadata?.event_payload?.operation_id === query.operationId && parsed.channel === query.channel && parsed.ts) {
          return { status: "found", post: { channel: parsed.channel, ts: parsed.ts } };
        }
      } catch {
        // A line cut short by a crash mid-write: not a post.
      }
    }
    return { status: "absent" };
  }

  async postMessage(msg: SlackMessage, signal?: AbortSignal): Promise<PostResult> {
    if (signal?.aborted) throw abortError(signal);
    if (this.missing.has(msg.channel)) {
      // What Slack answers for a channel that does not exist (or is archived): permanent.
      throw new ExternalError("Slack refused chat.postMessage: channel_not_found", false, {
        slackError: "channel_not_found",
        httpStatus: 200,
        sink: true,
      });
    }
    const ts = syntheticTs();
    const line = { ts, channel: msg.channel, postedAt: new Date().toISOString(), request: buildPostMessageArgs(msg) };
    await mkdir(path.dirname(this.file), { recursive: true });
    // One write per line: appends of whole lines do not interleave.
    await appendFile(this.file, `${JSON.stringify(line)}\n`, "utf8");
    return { channel: msg.channel, ts };
  }
}

/* ---------------------------------------------------------------------------
 * Error classification
 * ------------------------------------------------------------------------- */

/** Slack platform errors worth retrying: Slack's side had a problem, not the request. */
const TRANSIENT_SLACK_ERRORS = new Set(["internal_error", "fatal_error", "service_unavailable", "request_timeout", "ratelimited", "rate_limited", "team_added_to_org"]);

/** Network failures worth retrying (connection refused/reset, DNS hiccups, timeouts). */
const TRANSIENT_NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "EPIPE",
  "ETIMEDOUT",
  "ESOCKETTIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENETDOWN",
  "EAI_AGAIN",
  "ENOTFOUND",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_HEADERS_TIMEOUT",
  "UND_ERR_BODY_TIMEOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
]);

type Loose = Record<string, unknown> & { code?: unknown; message?: unknown };

function asObject(value: unknown): Loose | undefined {
  return typeof value === "object" && value !== null ? (value as Loose) : undefined;
}

/** The first system/undici error code in an error's cause chain (fetch wraps them: TypeError("fetch failed") → cause). */
function networkCode(error: unknown): string | undefined {
  let current = asObject(error);
  for (let depth = 0; current && depth < 5; depth++) {
    if (typeof current.code === "string" && /^(E[A-Z_]+|UND_ERR_[A-Z_]+)$/.test(current.code)) return current.code;
    current = asObject(current.cause);
  }
  return undefined;
}

function isTimeout(error: unknown): boolean {
  const e = asObject(error);
  return e?.name === "TimeoutError" || (e?.name === "AbortError" && /timeout|timed out/i.test(String(e.message)));
}

function retryAfterMsFrom(seconds: unknown): number | undefined {
  const n = typeof seconds === "string" ? Number.parseInt(seconds, 10) : seconds;
  return typeof n === "number" && Number.isFinite(n) && n >= 0 ? Math.round(n * 1000) : undefined;
}

function build(
  message: string,
  transient: boolean,
  details: { slackError: string | null; httpStatus: number | null } & Record<string, unknown>,
  cause: unknown,
  retryAfterMs?: number,
): ExternalError {
  return new ExternalError(message, transient, details, retryAfterMs, { cause });
}

/**
 * Turn whatever the Slack client threw into an ExternalError the runner
 * understands: `transient` failures are retried (after Retry-After when Slack
 * gave one), permanent ones fail the operation at once. `details` keeps
 * `slackError` (Slack's error code or null), `httpStatus` (or null) and the
 * SDK's error code.
 */
export function classifySlackError(error: unknown, method = "chat.postMessage"): ExternalError {
  if (error instanceof ExternalError) return error;
  const e = asObject(error) ?? {};
  const sdkCode = typeof e.code === "string" ? e.code : undefined;

  switch (sdkCode) {
    case webApi.ErrorCode.RateLimitedError: {
      const retryAfterMs = retryAfterMsFrom(e.retryAfter);
      return build(
        `Slack rate-limited ${method}${retryAfterMs === undefined ? "" : `; retry after ${retryAfterMs / 1000} s`}`,
        true,
        { slackError: "ratelimited", httpStatus: 429, sdkCode, retryAfterSec: e.retryAfter ?? null },
        error,
        retryAfterMs,
      );
    }
    case webApi.ErrorCode.PlatformError: {
      const data = asObject(e.data) ?? {};
      const slackError = typeof data.error === "string" ? data.error : "unknown_error";
      const metadata = asObject(data.response_metadata);
      const transient = TRANSIENT_SLACK_ERRORS.has(slackError);
      const retryAfterMs = transient ? retryAfterMsFrom(metadata?.retryAfter) : undefined;
      const extra = {
        ...(Array.isArray(metadata?.messages) ? { slackMessages: metadata.messages } : {}),
        // missing_scope answers say which scope was needed.
        ...(typeof data.needed === "string" ? { needed: data.needed } : {}),
      };
      // The SDK raises platform errors only for HTTP 200 answers with ok: false.
      return build(`Slack refused ${method}: ${slackError}`, transient, { slackError, httpStatus: 200, sdkCode, ...extra }, error, retryAfterMs);
    }
    case webApi.ErrorCode.HTTPError: {
      const status = typeof e.statusCode === "number" ? e.statusCode : null;
      const body = asObject(e.body);
      const slackError = typeof body?.error === "string" ? body.error : null;
      const headers = asObject(e.headers);
      const retryAfterMs = retryAfterMsFrom(headers?.["retry-after"]);
      const transient = status === null || status >= 500 || status === 408 || status === 429 || (slackError !== null && TRANSIENT_SLACK_ERRORS.has(slackError));
      return build(
        `Slack answered HTTP ${status ?? "?"}${typeof e.statusMessage === "string" && e.statusMessage ? ` ${e.statusMessage}` : ""}${slackError ? ` (${slackError})` : ""}`,
        transient,
        { slackError, httpStatus: status, sdkCode },
        error,
        transient ? retryAfterMs : undefined,
      );
    }
    case webApi.ErrorCode.RequestError: {
      // No answer at all (refused, reset, timed out, DNS): Slack never saw it or
      // its answer was lost. Retrying is the only sensible thing.
      const original = e.original ?? e.cause;
      const code = networkCode(original);
      const timedOut = isTimeout(original);
      const what = timedOut ? "Slack did not answer in time" : `could not reach Slack: ${describeNetwork(original)}`;
      return build(what, true, { slackError: null, httpStatus: null, sdkCode, networkCode: code ?? (timedOut ? "TIMEOUT" : null) }, error);
    }
  }

  const message = typeof e.message === "string" ? e.message : String(error);
  // A 429 whose Retry-After the SDK could not read: still a rate limit, use the runner's backoff.
  if (/rate.?limit|Retry header did not contain a valid timeout/i.test(message)) {
    return build(`Slack rate-limited ${method}: ${message}`, true, { slackError: "ratelimited", httpStatus: 429, sdkCode: sdkCode ?? null }, error);
  }
  const code = networkCode(error);
  if ((code && TRANSIENT_NETWORK_CODES.has(code)) || isTimeout(error) || e.name === "AbortError") {
    return build(`could not reach Slack: ${message}`, true, { slackError: null, httpStatus: null, networkCode: code ?? null }, error);
  }
  // Anything else (a local file error of the sink, a bug): retried like any unknown failure, bounded by maxAttempts.
  return build(message || "unknown Slack client error", true, { slackError: null, httpStatus: null, errorName: e.name ?? null }, error);
}

/** "fetch failed: connect ECONNREFUSED 127.0.0.1:9": the useful part is often in the cause. */
function describeNetwork(error: unknown): string {
  const e = asObject(error);
  const message = typeof e?.message === "string" ? e.message : String(error);
  const cause = asObject(e?.cause);
  const causeMessage = typeof cause?.message === "string" ? cause.message : "";
  return causeMessage && !message.includes(causeMessage) ? `${message}: ${causeMessage}` : message;
}
