import type { RequestHandler, Response } from "express";
import { allows, authenticate, type ApiPrincipal, type Scope } from "../auth/apiKeys";
import type { Db } from "../db/database";
import { AuthError } from "../errors/errors";
import { MissingScopeError } from "./problem";

/**
 * `Authorization: Bearer <API key>`, then the endpoint's scope. The key is
 * looked up on every request (one indexed query), so a revoked key is
 * refused from the next request on. The lookup runs as the login role: API
 * keys belong to no stream actor.
 */
export function requireScope(db: Db, scope: Scope): RequestHandler {
  return async (req, res, next) => {
    const header = req.get("authorization");
    if (!header) throw new AuthError("an API key is required: send `Authorization: Bearer <API key>`");
    const match = /^Bearer +(\S+) *$/i.exec(header);
    if (!match) throw new AuthError("the Authorization header must be `Bearer <API key>`");
    const result = await authenticate(db, match[1]!);
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
