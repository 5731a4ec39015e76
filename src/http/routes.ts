import type { RequestHandler } from "express";
import type pg from "pg";
import type { RateLimitDefaults } from "../auth/apiKeys";
import type { Db } from "../db/database";
import type { Logger } from "../logging/logger";
import type { RequestGate } from "./auth";
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
}

/** What every route module is given: the context, and the app's own shared machinery. */
export interface RouteContext extends ApiContext {
  feedWaitLimits: FeedWaitLimits;
  /** Authentication and rate limiting of API keys. */
  gate: RequestGate;
  feedWaits: FeedWaits;
}

export interface RouteDef {
  method: "get" | "post" | "put";
  /** An Express path, e.g. /v1/notifications/:id */
  path: string;
  handlers: RequestHandler[];
}
