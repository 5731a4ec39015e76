import type { Request, RequestHandler, Response } from "express";
import type { z } from "zod";
import type pg from "pg";
import type { ApiPrincipal, RateLimitDefaults, Scope } from "../auth/apiKeys";
import type { Db } from "../db/database";
import type { AddressPolicy } from "../webhooks/address";
import type { Logger } from "../logging/logger";
import { principalOf, requireScope, type RequestGate } from "./auth";
import { jsonBody } from "./body";
import { NoQuery } from "./schemas";
import { parseInput } from "./validation";
import type { FeedWaitLimits, FeedWaits } from "./feedWaits";
import type { TidingsMetrics } from "./metrics";

/** What the API is built from (createApp). */
export interface ApiContext {
  pool: pg.Pool;
  db: Db;
  logger?: Logger;
  metrics?: TidingsMetrics;
  /** Largest accepted request body in bytes (default 256 kB). */
  bodyLimit?: number;
  /** How often the shared poller of long-polling GET /v1/events reads the feed (default 250 ms). */
  feedPollMs?: number;
  /** Long-polls waiting at once, per API key and in this process (default 10 and 1,000). */
  feedWaitLimits?: FeedWaitLimits;
  /**
   * Requests per API key per window for keys without a limit of their own
   * (API_RATE_LIMIT, API_RATE_LIMIT_WINDOW_SECONDS). Unset: such keys are
   * not limited; a key's own limit (api.keys.rate_limit) always applies.
   */
  rateLimit?: RateLimitDefaults;
  /** Aborted when the process stops: every long-poll answers at once (docs/operations.md). */
  stopping?: AbortSignal;
  /** Which webhook URLs registration accepts (WEBHOOK_ALLOW_PRIVATE_ADDRESSES; default: public addresses only). */
  webhookAddresses?: AddressPolicy;
}

/** What every route module is given: the context, and the app's own shared machinery. */
export interface RouteContext extends ApiContext {
  feedWaitLimits: FeedWaitLimits;
  /** Authentication and rate limiting of API keys. */
  gate: RequestGate;
  feedWaits: FeedWaits;
}

export interface RouteDef {
  method: "get" | "post" | "put" | "patch" | "delete";
  /** An Express path, e.g. /v1/notifications/:id */
  path: string;
  handlers: RequestHandler[];
}

/** What a route's handler is given: the request's parts, each already parsed with its schema, and the caller. */
export interface RouteInput<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  principal: ApiPrincipal;
  req: Request;
}

/**
 * A route in one place: the scope it needs, the schemas of its path
 * parameters, query (none by default) and JSON body, and its handler. Every
 * part is parsed before the handler runs, in that order, so a bad request is
 * a 400 naming the part and the field (docs/api.md), whatever the route.
 */
export function route<P = Record<string, never>, Q = Record<string, never>, B = undefined>(
  ctx: RouteContext,
  def: {
    method: RouteDef["method"];
    path: string;
    scope: Scope;
    params?: z.ZodType<P>;
    query?: z.ZodType<Q>;
    body?: z.ZodType<B>;
    handle(input: RouteInput<P, Q, B>, res: Response): Promise<void>;
  },
): RouteDef {
  return {
    method: def.method,
    path: def.path,
    handlers: [
      requireScope(ctx.gate, def.scope),
      ...(def.body ? [jsonBody(ctx.bodyLimit)] : []),
      async (req, res) => {
        const params = def.params ? parseInput(def.params, req.params, "path") : ({} as P);
        const query = parseInput(def.query ?? NoQuery, req.query, "query") as Q;
        const body = def.body ? parseInput(def.body, req.body, "body") : (undefined as B);
        await def.handle({ params, query, body, principal: principalOf(res), req }, res);
      },
    ],
  };
}
