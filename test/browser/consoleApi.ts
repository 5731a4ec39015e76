import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { operatorTools } from "../../src/composition";
import { createApp } from "../../src/http/app";
import { createMetrics, type TidingsMetrics } from "../../src/http/metrics";
import type { TestApi } from "../helpers/api";
import type { TestDatabase } from "../helpers/db";
import { testLogger } from "../helpers/worker";

/**
 * The API as `npm start` builds it for the console: with the operator tools
 * the composition root hands in (test/helpers/api.ts's startApi has none, so
 * its repairs answer 404). Same `call` as startApi's.
 */
export async function startConsoleApi(t: TestDatabase, options: { feedPollMs?: number } = {}): Promise<TestApi> {
  const metrics: TidingsMetrics = createMetrics();
  const app = createApp({ pool: t.pool, db: t.db, logger: testLogger, metrics, feedPollMs: options.feedPollMs ?? 50, operatorTools });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    metrics,
    async call(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.key) headers.authorization = `Bearer ${opts.key}`;
      const body = opts.body === undefined ? undefined : typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
      if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) headers["content-type"] = "application/json";
      const res = await fetch(url + path, { method, headers, body });
      const text = await res.text();
      const contentType = res.headers.get("content-type") ?? "";
      return { status: res.status, headers: res.headers, contentType, text, json: /json/.test(contentType) ? JSON.parse(text) : undefined };
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
