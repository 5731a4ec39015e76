import type { ErrorRequestHandler, Request, Response } from "express";
import { ZodError } from "zod";
import {
  AuthError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
  PgCodes,
  TidingsError,
  UnknownEntityError,
  UnprocessableError,
  ValidationError,
  pgCode,
} from "../errors/errors";
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

/** A valid key without the scope an endpoint needs. */
export class MissingScopeError extends ForbiddenError {
  constructor(
    readonly requiredScope: string,
    readonly keyScopes: readonly string[],
  ) {
    super(`this endpoint needs the "${requiredScope}" (or "admin") scope; the API key has: ${keyScopes.join(", ")}`);
  }
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
  if (error instanceof UnsupportedMediaTypeError) return answer(415, "unsupported-media-type", "Unsupported media type", error.message);
  if (error instanceof PayloadTooLargeError) return answer(413, "payload-too-large", "Request body too large", error.message);
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
  if (internal) {
    problem.requestId = requestId;
    logger?.error({ err: error, requestId, method: req.method, path: problem.instance }, "request failed");
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
