import type { AddressInfo } from "node:net";
import { createApiKey, type Scope } from "../../src/auth/apiKeys";
import { createApp } from "../../src/http/app";
import { listen } from "../../src/http/server";
import { createMetrics, type TidingsMetrics } from "../../src/http/metrics";
import type { TestDatabase } from "./db";
import { testLogger } from "./worker";

export interface TestApi {
  url: string;
  metrics: TidingsMetrics;
  /** fetch against the API; `key` adds the Bearer header, a non-string `body` is sent as JSON. */
  call(method: string, path: string, options?: CallOptions): Promise<ApiAnswer>;
  close(): Promise<void>;
}

export interface CallOptions {
  key?: string;
  body?: unknown;
  headers?: Record<string, string>;
}

export interface ApiAnswer {
  status: number;
  headers: Headers;
  contentType: string;
  text: string;
  /** The parsed body when it is JSON (problem documents included), else undefined. */
  json: any;
}

/** The HTTP API on a random loopback port, against a test database. */
export async function startApi(t: TestDatabase, options: { bodyLimit?: number; feedPollMs?: number; metrics?: TidingsMetrics } = {}): Promise<TestApi> {
  const metrics = options.metrics ?? createMetrics();
  const app = createApp({ pool: t.pool, db: t.db, logger: testLogger, metrics, bodyLimit: options.bodyLimit, feedPollMs: options.feedPollMs ?? 50 });
  const server = await listen(app, "127.0.0.1", 0);
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    metrics,
    async call(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.key) headers.authorization = `Bearer ${opts.key}`;
      let body: string | undefined;
      if (opts.body !== undefined) {
        body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
        if (!Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) headers["content-type"] = "application/json";
      }
      const res = await fetch(url + path, { method, headers, body });
      const text = await res.text();
      const contentType = res.headers.get("content-type") ?? "";
      let json: unknown;
      if (/json/.test(contentType)) json = JSON.parse(text);
      return { status: res.status, headers: res.headers, contentType, text, json };
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A fresh API key with these scopes; returns its secret. */
export async function apiKey(t: TestDatabase, scopes: Scope[], name = `test-${scopes.join("-")}`): Promise<string> {
  return (await createApiKey(t.db, { name, scopes, createdBy: "test" })).secret;
}

/** How many records every stream holds, and how many idempotency keys: to prove a refused request wrote nothing. */
export async function countEverything(t: TestDatabase): Promise<Record<string, number>> {
  const { rows: streams } = await t.query<{ name: string }>("select name from tidings.streams order by name");
  const counts: Record<string, number> = {};
  for (const { name } of streams) {
    counts[name] = (await t.query<{ n: number }>(`select count(*)::int as n from ${name}`)).rows[0]!.n;
  }
  counts["api.idempotency_keys"] = (await t.query<{ n: number }>("select count(*)::int as n from api.idempotency_keys")).rows[0]!.n;
  counts["graphile_worker jobs"] = (await t.query<{ n: number }>("select count(*)::int as n from graphile_worker.jobs")).rows[0]!.n;
  return counts;
}
