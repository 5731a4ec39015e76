import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import type { Server } from "node:http";
import path from "node:path";
import { promisify } from "node:util";
import express from "express";
import { createApiKey } from "../../src/auth/apiKeys";
import { createApp } from "../../src/http/app";
import { createMetrics } from "../../src/http/metrics";
import type { BenchDatabase } from "./database";

const run = promisify(execFile);

async function listen(app: express.Express): Promise<{ server: Server; url: string }> {
  return new Promise((resolve) => {
    const server = app.listen(0, "127.0.0.1", () => {
      const address = server.address();
      resolve({ server, url: `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}` });
    });
  });
}

/** autocannon in its own process, so the load generator does not share the server's event loop. */
async function autocannon(url: string, options: { seconds: number; connections: number; body: string; headers: Record<string, string> }) {
  const bin = path.resolve(__dirname, "../../node_modules/autocannon/autocannon.js");
  const args = [bin, "--json", "-c", String(options.connections), "-d", String(options.seconds), "-m", "POST", "-b", options.body];
  for (const [k, v] of Object.entries(options.headers)) args.push("-H", `${k}=${v}`);
  args.push(url);
  const { stdout } = await run(process.execPath, args, { maxBuffer: 64 * 1024 * 1024 });
  const result = JSON.parse(stdout) as { requests: { average: number }; latency: { p99: number; p50: number }; non2xx: number; errors: number };
  return { rps: result.requests.average, p50: result.latency.p50, p99: result.latency.p99, non2xx: result.non2xx, errors: result.errors };
}

/**
 * POST /v1/notifications, the app connected as the service login as in
 * production (validation, API key, idempotency bookkeeping, one
 * transaction appending the client operation and queueing its job) beside a
 * no-op Express route that parses the same JSON body and answers 202.
 */
export async function httpEnqueue(bench: BenchDatabase, options: { seconds: number; connections: number }) {
  const body = JSON.stringify({ entityId: "bench-entity", subject: "Benchmark", text: "Hello from the benchmark.", tags: { bench: "http" } });
  const headers = { "content-type": "application/json" };

  const noopApp = express();
  noopApp.use(express.json({ limit: "256kb" }));
  noopApp.post("/noop", (req, res) => {
    res.status(202).json({ id: randomUUID(), status: "accepted", received: Object.keys(req.body as object).length });
  });
  const noop = await listen(noopApp);
  const noopResult = await autocannon(`${noop.url}/noop`, { ...options, body, headers });
  noop.server.close();

  const key = await createApiKey(bench.db, { name: "bench", scopes: ["producer"], createdBy: "bench" });
  const api = await listen(createApp({ pool: bench.pool, db: bench.db, metrics: createMetrics({ defaultMetrics: false }) }));
  const enqueueResult = await autocannon(`${api.url}/v1/notifications`, {
    ...options,
    body,
    headers: { ...headers, authorization: `Bearer ${key.secret}` },
  });
  api.server.close();
  return { noop: noopResult, enqueue: enqueueResult };
}
