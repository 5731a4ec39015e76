import type { RequestHandler, Response } from "express";
import { admitRequests, allows, type AdmissionResult, type ApiPrincipal, type RateLimitDefaults, type RateWindow, type Scope } from "../auth/apiKeys";
import type pg from "pg";
import { AuthError } from "../errors/errors";
import { MissingScopeError, RateLimitedError } from "./problem";

/** One request's place in its key's rate-limit window. */
export interface RequestAdmission {
  result: AdmissionResult;
  /** Where this request stands in the window (null: the key has no limit). */
  rate: { limit: number; windowSeconds: number; remaining: number; resetSeconds: number; allowed: boolean } | null;
}

interface Waiting {
  resolve(admission: RequestAdmission): void;
  reject(error: unknown): void;
}

/**
 * Authenticates requests and counts them against their key's rate limit,
 * one statement per key at a time: the requests that present a key while
 * its statement is in flight wait for it to finish and are then counted
 * together by the next one (admitRequests with their number). Under load
 * a key costs one statement per round trip, however many requests it
 * sends; unloaded, one per request, as the key lookup alone did. Nothing is
 * kept between statements, so a revocation or a new limit counts from the
 * next one on.
 */
export class RequestGate {
  private readonly queued = new Map<string, Waiting[]>();
  private readonly running = new Set<string>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly defaults: RateLimitDefaults,
  ) {}

  admit(secret: string): Promise<RequestAdmission> {
    return new Promise((resolve, reject) => {
      const waiting = this.queued.get(secret);
      if (waiting) waiting.push({ resolve, reject });
      else this.queued.set(secret, [{ resolve, reject }]);
      if (!this.running.has(secret)) void this.flush(secret);
    });
  }

  private async flush(secret: string): Promise<void> {
    const batch = this.queued.get(secret);
    if (!batch) return;
    this.queued.delete(secret);
    this.running.add(secret);
    try {
      const result = await admitRequests(this.pool, secret, batch.length, this.defaults);
      const window = result.ok ? result.window : null;
      // The batch was counted as one step of `batch.length`: request i used the (used - n + i + 1)th place.
      batch.forEach((w, i) => w.resolve({ result, rate: window && placeInWindow(window, window.used - batch.length + i + 1) }));
    } catch (error) {
      for (const w of batch) w.reject(error);
    } finally {
      this.running.delete(secret);
      if (this.queued.has(secret)) void this.flush(secret);
    }
  }
}

function placeInWindow(window: RateWindow, place: number): NonNullable<RequestAdmission["rate"]> {
  return {
    limit: window.limit,
    windowSeconds: window.windowSeconds,
    remaining: Math.max(0, window.limit - place),
    // Whole seconds, rounded up, and at least 1 (the draft's delta-seconds; a client waiting 0 s would be refused again).
    resetSeconds: Math.max(1, Math.ceil(window.resetSeconds)),
    allowed: place <= window.limit,
  };
}

/**
 * The RateLimit header fields of draft-ietf-httpapi-ratelimit-headers-06
 * (separate -Limit, -Remaining, -Reset fields and a -Policy naming the
 * window): what express-rate-limit calls "draft-6", the form most clients
 * parse today.
 */
export function rateLimitHeaders(rate: NonNullable<RequestAdmission["rate"]>): Record<string, string> {
  return {
    "RateLimit-Policy": `${rate.limit};w=${rate.windowSeconds}`,
    "RateLimit-Limit": String(rate.limit),
    "RateLimit-Remaining": String(rate.remaining),
    "RateLimit-Reset": String(rate.resetSeconds),
  };
}

/**
 * `Authorization: Bearer <API key>`, the key's rate limit, then the
 * endpoint's scope. The key is looked up for every request (one indexed
 * statement that also counts the request, shared by the requests that
 * arrive while it runs: RequestGate), so a revoked key is refused from the
 * next lookup on. The lookup runs as the login role: API keys belong to no
 * stream actor.
 */
export function requireScope(gate: RequestGate, scope: Scope): RequestHandler {
  return async (req, res, next) => {
    const header = req.get("authorization");
    if (!header) throw new AuthError("an API key is required: send `Authorization: Bearer <API key>`");
    const match = /^Bearer +(\S+) *$/i.exec(header);
    if (!match) throw new AuthError("the Authorization header must be `Bearer <API key>`");
    const { result, rate } = await gate.admit(match[1]!);
    if (!result.ok) {
      throw new AuthError(result.reason === "revoked" ? "this API key has been revoked" : "the API key is not valid");
    }
    if (rate) {
      const headers = rateLimitHeaders(rate);
      if (!rate.allowed) throw new RateLimitedError(rate.limit, rate.windowSeconds, rate.resetSeconds, headers);
      res.set(headers);
    }
    if (!allows(result.principal.scopes, scope)) throw new MissingScopeError(scope, result.principal.scopes);
    res.locals.principal = result.principal;
    next();
  };
}

export function principalOf(res: Response): ApiPrincipal {
  const principal = res.locals.principal as ApiPrincipal | undefined;
  if (!principal) throw new Error("route has no requireScope in front of it");
  return principal;
}
