import type { ErrorRequestHandler, Request, Response } from "express";
import { ZodError } from "zod";
import { AuthError, ConflictError, ForbiddenError, NotFoundError, PgCodes, TidingsError, UnknownEntityError, UnprocessableError, ValidationError, pgCode } from "../errors/errors";
import type { Logger } from "../logging/logger";
import { issuesFrom } from "./validation";

/**
 * The one place errors become HTTP answers: RFC 7807 (RFC 9457) problem
 * documents, `application/problem+json`. Route handlers throw the error types
 * of src/errors/errors.ts (or the HTTP-level ones below); nothing else writes
 * an error response.
 */
export const PROBLEM_CONTENT_TYPE = "application/problem+json";

export interface Problem {
  /** A URN naming the kind of problem; docs/api.md lists them. */
  type: string;
  title: string;
  status: number;
  detail: string;
  instance?: string;
  errors?: { path: string; message: string }[];
  [extension: string]: unknown;
}

// --- HTTP-level errors (the domain's error types live in src/errors) --------

export class MethodNotAllowedError extends TidingsError {
  readonly kind = "method_not_allowed";
  constructor(
    method: string,
    path: string,
    readonly allow: readonly string[],
  ) {
    super(`${method} is not allowed on ${path}; allowed: ${allow.join(", ")}`);
  }
}

export class UnsupportedMediaTypeError extends TidingsError {
  readonly kind = "unsupported_media_type";
}

export class PayloadTooLargeError extends TidingsError {
  readonly kind = "payload_too_large";
}

/** The same Idempotency-Key with a different request: 422, as the IETF Idempotency-Key draft asks. */
export class IdempotencyKeyReusedError extends ConflictError {
  constructor(
    readonly idempotencyKey: string,
    readonly originalId: string,
  ) {
    super(
      `Idempotency-Key "${idempotencyKey}" was already used with a different request (it created notification ${originalId}); ` +
        "repeat the original request exactly, or use a new key for a new notification",
    );
  }
}

/**
 * A conditional write (If-Match) whose expected version is no longer the
 * current one: 412, with the current ETag when there is one.
 */
export class PreconditionFailedError extends TidingsError {
  readonly kind = "precondition_failed";
  constructor(
    message: string,
    readonly currentETag: string | null,
  ) {
    super(message);
  }
}

/** A valid key without the scope an endpoint needs. */
export class MissingScopeError extends ForbiddenError {
  constructor(
    readonly requiredScope: string,
    readonly keyScopes: readonly string[],
  ) {
    super(`this endpoint needs the "${requiredScope}" (or "admin") scope; the API key has: ${keyScopes.join(", ")}`);
  }
}

/** The API key has used its requests of this window: 429 with Retry-After and the RateLimit fields. */
export class RateLimitedError extends TidingsError {
  readonly kind = "rate_limited";
  constructor(
    readonly limit: number,
    readonly windowSeconds: number,
    readonly retryAfterSeconds: number,
    readonly rateLimitHeaders: Record<string, string>,
  ) {
    super(`this API key may make ${limit} requests per ${windowSeconds} s and has made them; the window ends in ${retryAfterSeconds} s`);
  }
}

/** Too many long-polls of the feed waiting already (for this key, or in this process): 429 with Retry-After. */
export class TooManyWaitsError extends TidingsError {
  readonly kind = "too_many_waits";
  constructor(
    readonly scope: "key" | "process",
    readonly cap: number,
    readonly retryAfterSeconds: number,
  ) {
    super(
      scope === "key"
        ? `this API key already has ${cap} requests waiting on the feed (the most it may have); retry when one has answered, or without wait`
        : `this process already has ${cap} requests waiting on the feed (the most it serves); retry later, or without wait`,
    );
  }
}

// --- The database out of reach ----------------------------------------------

/** How long a client is asked to wait when the database is out of reach. */
export const DATABASE_RETRY_AFTER_SECONDS = 5;

/** Node's socket errors for a peer that is gone, refuses, or cannot be found. */
const CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENETUNREACH", "ENOTFOUND", "EAI_AGAIN"]);
/**
 * SQLSTATEs of a server that is not there for us: class 08 (connection
 * exception), 57P01-57P03 (terminated by an administrator, crash, starting
 * up or shutting down), 53300 (too many connections).
 */
const UNAVAILABLE_SQLSTATE = /^(08[0-9A-Z]{3}|57P0[123]|53300)$/;
/**
 * node-postgres and pg-pool say these in words only (no code). Not "Cannot
 * use a pool after calling end on the pool": the process ended its own pool,
 * a bug (npm start ends it only once the server has closed), so a 500.
 */
const CONNECTION_MESSAGES = /^(Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error and is not queryable)/;

/**
 * Whether an error means the database could not be reached or lost the
 * connection (as opposed to refusing a statement): looked for in the error,
 * its causes, and an AggregateError's errors (Node tries IPv6 and IPv4).
 */
export function isDatabaseUnavailable(error: unknown, depth = 0): boolean {
  if (depth > 5 || typeof error !== "object" || error === null) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && (CONNECTION_ERROR_CODES.has(code) || UNAVAILABLE_SQLSTATE.test(code))) return true;
  if (error instanceof Error && CONNECTION_MESSAGES.test(error.message)) return true;
  if (error instanceof AggregateError && error.errors.some((e) => isDatabaseUnavailable(e, depth + 1))) return true;
  return isDatabaseUnavailable((error as { cause?: unknown }).cause, depth + 1);
}

// --- Mapping ------------------------------------------------------------------

const URN = "urn:tidings:problem:";

/** body-parser's errors carry `type`; these are the ones a client can cause. */
interface BodyParserError {
  type: string;
  status?: number;
  message: string;
  limit?: number;
}

function isBodyParserError(error: unknown): error is BodyParserError {
  const e = error as { type?: unknown; status?: unknown } | null;
  return typeof e?.type === "string" && typeof e.status === "number" && e.status >= 400 && e.status < 500;
}

export interface ProblemAnswer {
  problem: Problem;
  headers: Record<string, string>;
  /** true when the error was not the client's doing: log it, say nothing about it. */
  internal: boolean;
}

function answer(status: number, slug: string, title: string, detail: string, extra: Partial<Problem> = {}): ProblemAnswer {
  return { problem: { type: URN + slug, title, status, detail, ...extra }, headers: {}, internal: false };
}

export function problemFor(error: unknown): ProblemAnswer {
  if (error instanceof ValidationError) {
    const errors = error.issues.length > 0 ? error.issues : [{ path: "(request)", message: error.message }];
    return answer(400, "validation-failed", "The request is not valid", error.message, { errors });
  }
  if (error instanceof ZodError) {
    const errors = issuesFrom(error);
    return answer(400, "validation-failed", "The request is not valid", errors.map((i) => `${i.path}: ${i.message}`).join("; "), {
      errors,
    });
  }
  if (error instanceof NotFoundError) return answer(404, "not-found", "Not found", error.message);
  if (error instanceof IdempotencyKeyReusedError) {
    return answer(422, "idempotency-key-reused", "Idempotency-Key reused with a different request", error.message, {
      idempotencyKey: error.idempotencyKey,
      notificationId: error.originalId,
    });
  }
  if (error instanceof UnknownEntityError) {
    return answer(422, "unknown-entity", "The entity does not exist", error.message, { entityId: error.entityId });
  }
  if (error instanceof UnprocessableError) return answer(422, "unprocessable", "The request cannot be acted on", error.message);
  if (error instanceof ConflictError) return answer(409, "conflict", "Conflict with what is stored", error.message);
  if (error instanceof AuthError) {
    const a = answer(401, "unauthorized", "Authentication required", error.message);
    a.headers["WWW-Authenticate"] = 'Bearer realm="tidings"';
    return a;
  }
  if (error instanceof MissingScopeError) {
    const a = answer(403, "forbidden", "The API key may not do this", error.message, { requiredScope: error.requiredScope });
    a.headers["WWW-Authenticate"] = `Bearer realm="tidings", error="insufficient_scope", scope="${error.requiredScope}"`;
    return a;
  }
  // A privilege PostgreSQL refused is the API's own mistake (it chose the role), not the client's.
  if (error instanceof ForbiddenError && pgCode(error.cause) !== PgCodes.insufficientPrivilege) {
    return answer(403, "forbidden", "Forbidden", error.message);
  }
  if (error instanceof MethodNotAllowedError) {
    const a = answer(405, "method-not-allowed", "Method not allowed", error.message);
    a.headers.Allow = error.allow.join(", ");
    return a;
  }
  if (error instanceof PreconditionFailedError) {
    const a = answer(412, "precondition-failed", "The resource changed since the version given in If-Match", error.message);
    if (error.currentETag !== null) a.headers.ETag = error.currentETag;
    return a;
  }
  if (error instanceof UnsupportedMediaTypeError) return answer(415, "unsupported-media-type", "Unsupported media type", error.message);
  if (error instanceof PayloadTooLargeError) return answer(413, "payload-too-large", "Request body too large", error.message);
  if (error instanceof RateLimitedError) {
    const a = answer(429, "rate-limited", "Too many requests for this API key", error.message, {
      limit: error.limit,
      windowSeconds: error.windowSeconds,
    });
    Object.assign(a.headers, error.rateLimitHeaders, { "Retry-After": String(error.retryAfterSeconds) });
    return a;
  }
  if (error instanceof TooManyWaitsError) {
    const a = answer(429, "too-many-waits", "Too many requests waiting on the feed", error.message, { cap: error.cap, capScope: error.scope });
    a.headers["Retry-After"] = String(error.retryAfterSeconds);
    return a;
  }
  // Client errors that carry a 4xx status but no body-parser `type`: the router's URIError for a path
  // that is not percent-encoded UTF-8, and zlib's errors (Z_*, ERR__* for brotli) for a body that does not match its Content-Encoding.
  const status = (error as { status?: unknown } | null)?.status;
  if (error instanceof URIError && status === 400) {
    return answer(400, "bad-request", "Bad request", `the path is not valid percent-encoded UTF-8 (${error.message})`);
  }
  const code = (error as { code?: unknown } | null)?.code;
  if (error instanceof Error && status === 400 && typeof code === "string" && /^(Z_|ERR__)/.test(code)) {
    return answer(400, "bad-request", "Bad request", `the request body could not be decompressed as its Content-Encoding says: ${error.message}`);
  }
  if (isBodyParserError(error)) {
    switch (error.type) {
      case "entity.parse.failed":
        return answer(400, "malformed-json", "The body is not valid JSON", `the request body is not valid JSON: ${error.message}`);
      case "entity.too.large":
        return answer(413, "payload-too-large", "Request body too large", `the request body is larger than the limit of ${error.limit ?? "?"} bytes`);
      case "encoding.unsupported":
      case "charset.unsupported":
        return answer(415, "unsupported-media-type", "Unsupported media type", error.message);
      default:
        return answer(error.status ?? 400, "bad-request", "Bad request", error.message);
    }
  }
  if (isDatabaseUnavailable(error)) {
    const a = answer(
      503,
      "database-unavailable",
      "The database is out of reach",
      `tidings cannot reach its database at the moment; retry in ${DATABASE_RETRY_AFTER_SECONDS} s (a POST with the same Idempotency-Key is safe to repeat)`,
    );
    a.headers["Retry-After"] = String(DATABASE_RETRY_AFTER_SECONDS);
    return a;
  }
  return {
    problem: {
      type: URN + "internal",
      title: "Internal error",
      status: 500,
      detail: "tidings could not answer this request; the error is logged under this problem's requestId",
    },
    headers: {},
    internal: true,
  };
}

export function sendProblem(req: Request, res: Response, error: unknown, logger?: Logger): void {
  const { problem, headers, internal } = problemFor(error);
  const requestId = res.getHeader("X-Request-Id");
  problem.instance = req.originalUrl.split("?")[0];
  // Every problem names its request (an RFC 9457 extension member), so a client's report leads to the log lines.
  if (typeof requestId === "string") problem.requestId = requestId;
  if (internal) {
    logger?.error({ err: error, requestId, method: req.method, path: problem.instance }, "request failed");
  } else if (problem.status === 503) {
    // Not the client's doing, and not a bug: operators need to see it, once per request is enough.
    logger?.warn({ err: error, requestId, method: req.method, path: problem.instance }, "database out of reach: answered 503");
  }
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.status(problem.status).set(headers).type(PROBLEM_CONTENT_TYPE).send(JSON.stringify(problem));
}

/** The app's last middleware: every error thrown or passed on ends here. */
export function problemHandler(logger?: Logger): ErrorRequestHandler {
  return (error, req, res, _next) => sendProblem(req, res, error, logger);
}
