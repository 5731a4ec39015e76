import type { RequestHandler } from "express";
import type pg from "pg";
import type { Db } from "../db/database";
import type { Logger } from "../logging/logger";
import type { TidingsMetrics } from "./metrics";

/** What every route module is given. */
export interface ApiContext {
  pool: pg.Pool;
  db: Db;
  logger?: Logger;
  metrics?: TidingsMetrics;
  /** Largest accepted request body in bytes (default 256 kB). */
  bodyLimit?: number;
  /** How often a long-polling GET /v1/events looks for new events (default 250 ms). */
  feedPollMs?: number;
}

export interface RouteDef {
  method: "get" | "post" | "put";
  /** An Express path, e.g. /v1/notifications/:id */
  path: string;
  handlers: RequestHandler[];
}
