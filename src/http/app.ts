import express, { type Express } from "express";
import { pendingMigrations } from "../db/migrate";
import { NotFoundError } from "../errors/errors";
import { RequestGate } from "./auth";
import { adminActionRoutes, type OperatorTools } from "./adminActions";
import { consoleRoutes, consoleStatic } from "./console";
import { entityRoutes } from "./entities";
import { eventsStreamRoutes } from "./eventsStream";
import { createFeedWaits, feedRoutes } from "./feed";
import { DEFAULT_FEED_WAIT_LIMITS } from "./feedWaits";
import { notificationRoutes } from "./notifications";
import { buildOpenApiDocument } from "./openapi";
import { MethodNotAllowedError, problemHandler } from "./problem";
import { accessLog, assignRequestId } from "./requestLog";
import { scheduleRoutes } from "./schedules";
import { templateRoutes } from "./templates";
import type { ApiContext, RouteContext, RouteDef } from "./routes";
import { webhookRoutes } from "./webhooks";

export type ApiDeps = ApiContext & {
  /** The operators' repairs behind /v1/admin/actions and /v1/admin/resend (src/composition.ts `operatorTools`); without them those answer 404. */
  operatorTools?: OperatorTools;
};

/**
 * The HTTP API (docs/api.md): notifications, the event feed and entities
 * under /v1 behind API keys; health, readiness, metrics and the OpenAPI
 * document open. Every error leaves through src/http/problem.ts. Limits
 * (docs/api.md): a rate limit per API key, kept in PostgreSQL; a cap on
 * long-polls per key and per process, which share one poller; cached
 * database gauges in /metrics. When `deps.stopping` is aborted every
 * long-poll answers at once and answers close their connection, so
 * `server.close()` finishes as soon as the requests in flight have.
 */
export function createApp(deps: ApiDeps): Express {
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  // Express's query parser would build objects from a[b]=c; the API's parameters are flat strings.
  app.set("query parser", "simple");

  const feedWaitLimits = deps.feedWaitLimits ?? DEFAULT_FEED_WAIT_LIMITS;
  const ctx: RouteContext = {
    ...deps,
    feedWaitLimits,
    gate: new RequestGate(deps.pool, deps.rateLimit ?? { limit: 0, windowSeconds: 60 }),
    feedWaits: createFeedWaits({ ...deps, feedWaitLimits }),
  };
  if (deps.stopping?.aborted) ctx.feedWaits.stop();
  deps.stopping?.addEventListener("abort", () => ctx.feedWaits.stop(), { once: true });

  // Every answer carries X-Request-Id (the caller's, or a new one); the access log line and problem documents name it.
  app.use(assignRequestId());
  if (deps.logger) app.use(accessLog(deps.logger));
  app.use((_req, res, next) => {
    // Stopping: no keep-alive, so server.close() is not held by idle connections.
    if (deps.stopping?.aborted) res.set("Connection", "close");
    next();
  });

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

  let openapi: string | null = null;
  app.get("/openapi.json", (_req, res) => {
    openapi ??= JSON.stringify(buildOpenApiDocument());
    res.type("application/json").send(openapi);
  });

  app.get("/metrics", async (_req, res) => {
    if (!deps.metrics) throw new NotFoundError("metrics are not enabled in this process");
    const text = await deps.metrics.render(deps.db);
    res.type(deps.metrics.contentType).send(text);
  });

  // The operator console: static files at /console, on the API below (docs/console.md).
  app.use("/console", ...consoleStatic());

  const routes: RouteDef[] = [
    ...notificationRoutes(ctx),
    ...feedRoutes(ctx),
    ...entityRoutes(ctx),
    ...webhookRoutes(ctx),
    ...templateRoutes(ctx),
    ...scheduleRoutes(ctx),
    ...eventsStreamRoutes(ctx),
    ...adminActionRoutes(ctx, deps.operatorTools),
    ...consoleRoutes(ctx),
  ];
  for (const r of routes) app[r.method](r.path, ...r.handlers);

  // A known path with another method: 405 naming the allowed ones (OPTIONS answers them).
  const methodsByPath = new Map<string, string[]>();
  for (const path of ["/healthz", "/readyz", "/openapi.json", "/metrics"]) methodsByPath.set(path, ["GET", "HEAD"]);
  for (const r of routes) {
    const list = methodsByPath.get(r.path) ?? [];
    list.push(r.method.toUpperCase(), ...(r.method === "get" ? ["HEAD"] : []));
    methodsByPath.set(r.path, list);
  }
  for (const [path, methods] of methodsByPath) {
    const allow = [...new Set([...methods, "OPTIONS"])];
    app.all(path, (req, res) => {
      if (req.method === "OPTIONS") {
        res.status(204).set("Allow", allow.join(", ")).end();
        return;
      }
      throw new MethodNotAllowedError(req.method, req.path, allow);
    });
  }

  app.use((req) => {
    throw new NotFoundError(`no such endpoint: ${req.method} ${req.path} (see /openapi.json)`);
  });
  app.use(problemHandler(deps.logger));
  return app;
}
