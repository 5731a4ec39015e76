import { ZodError } from "zod";
/**
 * A small set of error types. The HTTP mapper (src/http/problem.ts) turns
 * them into RFC 7807 problems; the bot runner classifies each failure
 * (src/bots/runner.ts `classify`) to decide between a retry with backoff and
 * failing now.
 */
export abstract class TidingsError extends Error {
  abstract readonly kind: string;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Input that does not fit: names the field and the problem. */
export class ValidationError extends TidingsError {
  readonly kind = "validation";
  constructor(
    message: string,
    readonly issues: { path: string; message: string }[] = [],
  ) {
    super(message);
  }

  /** "invalid <what>: <field>: <problem>; ...": each issue names its field. */
  static fromIssues(what: string, issues: { path: string; message: string }[]): ValidationError {
    return new ValidationError(`invalid ${what}: ${issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`, issues);
  }

  /** zod's issues, each under its field's path (an issue about the whole value under `whole`). */
  static fromZod(error: ZodError, what: string, whole = "(value)"): ValidationError {
    return ValidationError.fromIssues(
      what,
      error.issues.map((i) => ({ path: i.path.join(".") || whole, message: i.message })),
    );
  }
}

export class NotFoundError extends TidingsError {
  readonly kind = "not_found";
}

/** The request is valid but clashes with what is stored (duplicate, wrong state). */
export class ConflictError extends TidingsError {
  readonly kind = "conflict";
}

/** The request is valid but names something tidings cannot act on (HTTP 422). */
export class UnprocessableError extends TidingsError {
  readonly kind = "unprocessable";
}

/** A notification for an entity that does not exist (never created, or removed). */
export class UnknownEntityError extends UnprocessableError {
  constructor(readonly entityId: string) {
    super(`unknown entity "${entityId}": create it first (PUT /v1/entities/${encodeURIComponent(entityId)})`);
  }
}

/** A handling change the state machine does not allow. */
export class InvalidTransitionError extends ConflictError {
  constructor(
    readonly action: string,
    readonly currentStatus: string,
    readonly requestedStatus: string,
    detail: string,
  ) {
    super(`cannot ${action} ${detail}: current status is ${currentStatus}, requested status is ${requestedStatus}`);
  }
}

export class AuthError extends TidingsError {
  readonly kind = "unauthorized";
}

export class ForbiddenError extends TidingsError {
  readonly kind = "forbidden";
}

/**
 * A failure of the outside world (SMTP, Slack, network). `transient` ones are
 * retried with backoff (after `retryAfterMs` when the other side said so);
 * permanent ones fail at once with the reason kept.
 */
export class ExternalError extends TidingsError {
  readonly kind = "external";
  constructor(
    message: string,
    readonly transient: boolean,
    readonly details: Record<string, unknown> = {},
    readonly retryAfterMs?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Anything thrown becomes an Error with a message worth keeping. */
export function coerceError(thrown: unknown): Error {
  // zod's own message is its issues as JSON; what is kept in handling state and shown to operators reads better.
  if (thrown instanceof ZodError) return ValidationError.fromZod(thrown, "data");
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === "string") return new Error(thrown);
  try {
    return new Error(`non-error thrown: ${JSON.stringify(thrown)}`);
  } catch {
    return new Error(`non-error thrown: ${String(thrown)}`);
  }
}

/** PostgreSQL error codes raised by the stream engine (migrations/0001_engine.sql). */
export const PgCodes = {
  appendOnly: "TD001",
  invalidTransition: "TD002",
  recordExists: "TD003",
  unknownStream: "TD004",
  idempotencyKeyReused: "TD005",
  unknownEntity: "TD006",
  /** The record belongs to an erased entity's notification: it is never re-driven or resent (migrations/0004_erasure.sql). */
  erased: "TD007",
  /** An erasure refused while the entity's work still waits (0004). */
  erasureRefused: "TD008",
  insufficientPrivilege: "42501",
  uniqueViolation: "23505",
} as const;

export function pgCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}
