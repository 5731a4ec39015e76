import express, { type Express } from "express";
import type pg from "pg";
import { pendingMigrations } from "../db/migrate";

export interface ApiDeps {
  pool: pg.Pool;
}

/** The HTTP API. For now: liveness and readiness. */
export function createApp(deps: ApiDeps): Express {
  const app = express();
  app.disable("x-powered-by");

  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });

  app.get("/readyz", async (_req, res) => {
    try {
      const pending = await pendingMigrations(deps.pool);
      if (pending.length > 0) {
        res.status(503).json({ status: "migrations pending", pending });
        return;
      }
      res.json({ status: "ready" });
    } catch (error) {
      res.status(503).json({ status: "database unreachable", error: (error as Error).message });
    }
  });

  return app;
}
