import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { RequestHandler } from "express";
import { pinoHttp } from "pino-http";
import type { Logger } from "../logging/logger";

export const REQUEST_ID_HEADER = "X-Request-Id";

/**
 * An incoming id is kept when it is a plain token (a UUID, a proxy's or a
 * tracer's id): printable ASCII without spaces, at most 200 characters, so it
 * cannot break a log line or a header. Anything else is replaced.
 */
const ACCEPTABLE_REQUEST_ID = /^[\x21-\x7e]{1,200}$/;

/** The request's id: the caller's X-Request-Id when acceptable, else a new UUID. */
export function requestIdOf(req: IncomingMessage): string {
  const incoming = req.headers["x-request-id"];
  return typeof incoming === "string" && ACCEPTABLE_REQUEST_ID.test(incoming) ? incoming : randomUUID();
}

/** Give each request its id (req.id, the X-Request-Id response header) before anything can fail. */
export function assignRequestId(): RequestHandler {
  return (req, res, next) => {
    const id = requestIdOf(req);
    (req as IncomingMessage & { id?: string }).id = id;
    res.set(REQUEST_ID_HEADER, id);
    next();
  };
}

/** Probes and scrapes come every few seconds: their successes are logged at debug, not info. */
const QUIET_PATHS: ReadonlySet<string> = new Set(["/healthz", "/readyz", "/metrics"]);

/**
 * One access log line per request (pino-http), written when the answer is
 * finished: method, path with query, status, response time and `requestId`, the
 * id the response carries in X-Request-Id. Only the method and URL of a
 * request are logged, never its headers (API keys) or body.
 */
export function accessLog(logger: Logger): RequestHandler {
  const middleware = pinoHttp({
    logger,
    // assignRequestId ran first; pino-http reads req.id and only falls back to this.
    genReqId: (req) => (req as IncomingMessage & { id?: string }).id ?? requestIdOf(req),
    customAttributeKeys: { reqId: "requestId" },
    quietReqLogger: true,
    serializers: {
      req: (req: { method: string; url: string }) => ({ method: req.method, url: req.url }),
      res: (res: { statusCode: number }) => ({ statusCode: res.statusCode }),
    },
    customLogLevel: (req: IncomingMessage, res: ServerResponse, error?: Error) => {
      // 5xx are logged with their cause by the problem handler; the access line stays a summary.
      if (error || res.statusCode >= 500) return "warn";
      if (res.statusCode < 400 && QUIET_PATHS.has((req.url ?? "").split("?")[0]!)) return "debug";
      return "info";
    },
    customSuccessMessage: (req, res, responseTime) => `${req.method} ${req.url} ${res.statusCode} ${Math.round(responseTime)}ms`,
    customErrorMessage: (req, res, error) => `${req.method} ${req.url} ${res.statusCode}: ${error.message}`,
  });
  return middleware;
}
