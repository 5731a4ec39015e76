import type { Server } from "node:http";
import net from "node:net";
import type { AddressInfo } from "node:net";
import { Kysely, PostgresDialect } from "kysely";
import type pg from "pg";
import type { Database, Db } from "../../src/db/database";
import { createApp } from "../../src/http/app";
import { listen } from "../../src/http/server";
import { createMetrics, type TidingsMetrics } from "../../src/http/metrics";
import type { ApiContext } from "../../src/http/routes";
import type { ApiAnswer, CallOptions } from "./api";
import { testLogger } from "./worker";

/**
 * The API with the limits' settings (rate limit, long-poll caps, a stop
 * signal, metrics' refresh interval) on a random loopback port, over any
 * pool: the tests of src/http's limits start several, some on a database
 * that is out of reach.
 */
export interface LimitedApi {
  url: string;
  server: Server;
  metrics: TidingsMetrics;
  /** Aborting it is what npm start does at SIGTERM before server.close(). */
  stopping: AbortController;
  call(method: string, path: string, options?: CallOptions): Promise<ApiAnswer>;
  /** server.close() alone, as npm start does it (no connection is cut): resolves when every connection has ended. */
  closeGracefully(): Promise<void>;
  close(): Promise<void>;
}

export async function startLimitedApi(deps: Omit<ApiContext, "stopping" | "logger" | "metrics"> & { metricsRefreshMs?: number }): Promise<LimitedApi> {
  const metrics = createMetrics({ databaseRefreshMs: deps.metricsRefreshMs });
  const stopping = new AbortController();
  const app = createApp({ ...deps, logger: testLogger, metrics, stopping: stopping.signal });
  const server = await listen(app, "127.0.0.1", 0);
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  let closed = false;
  return {
    url,
    server,
    metrics,
    stopping,
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
    async closeGracefully() {
      closed = true;
      await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
    },
    async close() {
      stopping.abort();
      if (closed) return;
      closed = true;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * A Kysely over `pool` that records every statement it runs (Kysely's own
 * log hook): what the API asks the database, counted from outside the code
 * under test.
 */
export function countingDb(pool: pg.Pool): { db: Db; statements: string[]; count(pattern: RegExp): number } {
  const statements: string[] = [];
  const db = new Kysely<Database>({
    dialect: new PostgresDialect({ pool }),
    log: (event) => {
      statements.push(event.query.sql);
    },
  }) as Db;
  return { db, statements, count: (pattern) => statements.filter((s) => pattern.test(s)).length };
}

/** Reads of the event feed's page (readAfter's ordered select, not any check beside it). */
export const FEED_READ = /from "notification"\."events"[\s\S]*order by/;

/**
 * A TCP proxy on loopback in front of a PostgreSQL server: the API's pool
 * connects through it, and `cut()` takes the database away for good (stops
 * listening and drops every connection), as a network partition or a
 * stopped server would.
 */
export async function startTcpProxy(target: { host: string; port: number }): Promise<{ port: number; cut(): Promise<void> }> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
    client.on("close", () => upstream.destroy());
    upstream.on("close", () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as AddressInfo).port,
    async cut() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sockets) s.destroy();
      await closed;
    },
  };
}

/** A loopback port nothing listens on (it was free a moment ago and is closed again). */
export async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
