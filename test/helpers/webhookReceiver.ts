import http, { type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createApiKey } from "../../src/auth/apiKeys";
import { createApp } from "../../src/http/app";
import { createMetrics } from "../../src/http/metrics";
import type { WebhookSettings } from "../../src/webhooks/delivery.bot";
import { allBots } from "../../src/composition";
import type { TestApi } from "./api";
import { startTidings, type Tidings } from "./tidings";
import { startTestWorker, testLogger } from "./worker";

export interface ReceivedWebhook {
  headers: Record<string, string>;
  body: string;
  /** The status this receiver answered. */
  answered: number;
}

export interface WebhookReceiver {
  url: string;
  /** Every request, in arrival order, with what it was answered. */
  readonly received: ReceivedWebhook[];
  /** The requests answered 2xx, parsed. */
  delivered(): Array<{ type: string; timestamp: string; data: Record<string, unknown> }>;
  close(): Promise<void>;
}

/**
 * A webhook endpoint on loopback. `answer(n)` gives the status of the n-th
 * request (1-based): failures land by construction ("503 to the first two"),
 * never by timing.
 */
export async function startWebhookReceiver(answer: (n: number) => number = () => 204): Promise<WebhookReceiver> {
  const received: ReceivedWebhook[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const status = answer(received.length + 1);
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, Array.isArray(v) ? v.join(", ") : (v ?? "")]));
      received.push({ headers, body: Buffer.concat(chunks).toString("utf8"), answered: status });
      res.statusCode = status;
      res.end(status >= 400 ? "not now" : "");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    received,
    delivered: () => received.filter((r) => r.answered < 300).map((r) => JSON.parse(r.body)),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * tidings with webhooks: the workflow on loopback (test/helpers/tidings.ts),
 * the webhook bots with short retries, and the API with loopback endpoints
 * allowed (WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true: receivers run on 127.0.0.1).
 */
export async function startTidingsWithWebhooks(
  options: { webhooks?: Partial<WebhookSettings>; webhookRetrySchedule?: number[] } = {},
): Promise<{ tidings: Tidings; api: TestApi; adminKey: string }> {
  const tidings = await startTidings({ autoStart: false });
  const settings: WebhookSettings = { timeoutMs: 5_000, allowPrivateAddresses: true, disableAfter: 5, ...options.webhooks };
  tidings.deps.webhooks = settings;
  tidings.worker = await startTestWorker(tidings.t, allBots(), tidings.deps, {
    maxAttempts: 3,
    concurrency: 8,
    retrySchedules: { webhook_bot: options.webhookRetrySchedule ?? [50, 50, 50] },
  });
  const app = createApp({ pool: tidings.t.pool, db: tidings.t.db, logger: testLogger, metrics: createMetrics(), webhookAddresses: { allowPrivateAddresses: true } });
  const server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const api: TestApi = {
    url,
    metrics: createMetrics(),
    async call(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      if (opts.key) headers.authorization = `Bearer ${opts.key}`;
      let body: string | undefined;
      if (opts.body !== undefined) {
        body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
        headers["content-type"] ??= "application/json";
      }
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
  const adminKey = (await createApiKey(tidings.t.db, { name: "webhooks-admin", scopes: ["admin"], createdBy: "test" })).secret;
  return { tidings, api, adminKey };
}
