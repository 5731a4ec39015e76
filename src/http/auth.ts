import type { RequestHandler, Response } from "express";
import { allows, authenticate, type ApiPrincipal, type AuthenticationResult, type Scope } from "../auth/apiKeys";
import type { Db } from "../db/database";
import { AuthError } from "../errors/errors";
import { MissingScopeError } from "./problem";

const inFlight = new WeakMap<Db, Map<string, Promise<AuthenticationResult>>>();

/**
 * Requests that present the same key while its lookup is in flight share
 * that lookup: under load, one query serves every request that arrived
 * during the previous one, instead of one query per request. Nothing is kept
 * after the answer, so a revocation counts from the next lookup on.
 */
function authenticateShared(db: Db, secret: string): Promise<AuthenticationResult> {
  let lookups = inFlight.get(db);
  if (!lookups) inFlight.set(db, (lookups = new Map()));
  const pending = lookups.get(secret);
  if (pending) return pending;
  const lookup = authenticate(db, secret).finally(() => lookups.delete(secret));
  lookups.set(secret, lookup);
  return lookup;
}

/**
 * `Authorization: Bearer <API key>`, then the endpoint's scope. The key is
 * looked up for every request (one indexed query, shared by the requests
 * that arrive while it runs), so a revoked key is refused from the next
 * lookup on. The lookup runs as the login role: API keys belong to no stream
 * actor.
 */
export function requireScope(db: Db, scope: Scope): RequestHandler {
  return async (req, res, next) => {
    const header = req.get("authorization");
    if (!header) throw new AuthError("an API key is required: send `Authorization: Bearer <API key>`");
    const match = /^Bearer +(\S+) *$/i.exec(header);
    if (!match) throw new AuthError("the Authorization header must be `Bearer <API key>`");
    const result = await authenticateShared(db, match[1]!);
    if (!result.ok) {
      throw new AuthError(result.reason === "revoked" ? "this API key has been revoked" : "the API key is not valid");
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
