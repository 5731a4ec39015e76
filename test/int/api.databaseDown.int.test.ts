import pg from "pg";
import { generateSecret } from "../../src/auth/apiKeys";
import { createDb, createPool } from "../../src/db/database";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { apiKey, type ApiAnswer } from "../helpers/api";
import { closedPort, startLimitedApi, startTcpProxy, type LimitedApi } from "../helpers/limitsApi";

/**
 * While the database is out of reach the API answers 503 with Retry-After
 * (a problem document), not 500: a refused connection, a connection cut
 * under a request, a backend terminated by an administrator, no pool
 * client to be had. Each fault is made by the test (a port nothing
 * listens on, a proxy it cuts, pg_terminate_backend on a request it holds
 * with a lock), never by timing.
 */

let t: TestDatabase;
let reader: string;
const cleanups: (() => Promise<void>)[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  reader = await apiKey(t, ["admin"], "down-reader");
});
afterAll(async () => {
  for (const c of cleanups.reverse()) await c().catch(() => {});
  await t.close();
});

/** The API over its own pool to `url`. */
async function apiOn(url: string, applicationName: string, poolOptions: pg.PoolConfig = {}): Promise<{ api: LimitedApi; pool: pg.Pool }> {
  const pool =
    Object.keys(poolOptions).length > 0 ? new pg.Pool({ connectionString: url, application_name: applicationName, ...poolOptions }) : createPool(url, 5, applicationName);
  pool.on("error", () => {});
  const db = createDb(pool);
  const api = await startLimitedApi({ pool, db, rateLimit: { limit: 1000, windowSeconds: 3600 } });
  cleanups.push(async () => {
    await api.close();
    await db.destroy();
  });
  return { api, pool };
}

function withHostPort(url: string, port: number): string {
  const u = new URL(url);
  u.hostname = "127.0.0.1";
  u.port = String(port);
  return u.toString();
}

function expectUnavailable(answer: ApiAnswer): void {
  expect(answer.status).toBe(503);
  expect(answer.contentType).toMatch(/^application\/problem\+json/);
  expect(answer.json).toMatchObject({ type: "urn:tidings:problem:database-unavailable", status: 503 });
  expect(answer.json.detail).toMatch(/cannot reach its database/);
  expect(answer.headers.get("retry-after")).toBe("5");
}

/** Hold every statement on api.keys (each keyed request's first) behind a lock the test owns. */
async function holdKeyLookups(): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: t.adminUrl });
  await client.connect();
  await client.query("begin");
  await client.query("lock table api.keys in access exclusive mode");
  return {
    async release() {
      await client.query("rollback").catch(() => {});
      await client.end();
    },
  };
}

/** The backend of `applicationName` waiting for a lock (the held lookup), once it is. */
async function blockedBackend(applicationName: string): Promise<number> {
  return waitFor(
    async () => {
      const { rows } = await t.query("select pid from pg_stat_activity where application_name = $1 and wait_event_type = 'Lock'", [applicationName]);
      return rows[0]?.pid as number | undefined;
    },
    { what: `a request of ${applicationName} waiting on the lock` },
  );
}

describe("the database out of reach: 503 with Retry-After", () => {
  it("nothing listens where the database should be: keyed endpoints answer 503; health answers, readiness and metrics say so", async () => {
    const { api } = await apiOn(withHostPort(t.url, await closedPort()), "tidings-down-refused");
    expectUnavailable(await api.call("GET", "/v1/events", { key: generateSecret() }));
    expectUnavailable(await api.call("POST", "/v1/notifications", { key: generateSecret(), body: { entityId: "ada", subject: "s", text: "t" } }));
    expect((await api.call("GET", "/healthz")).status).toBe(200);
    expect((await api.call("GET", "/readyz")).status).toBe(503);
    const metrics = await api.call("GET", "/metrics");
    expect(metrics.status).toBe(200);
    expect(metrics.text).toMatch(/^tidings_metrics_database_up 0$/m);
  });

  it("the connection is cut (a proxy in front of PostgreSQL goes away): 503, also for a request in flight", async () => {
    const target = new URL(t.url);
    const proxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 5432) });
    cleanups.push(() => proxy.cut());
    const { api } = await apiOn(withHostPort(t.url, proxy.port), "tidings-down-proxy");
    expect((await api.call("GET", "/v1/events", { key: reader })).status).toBe(200);

    // A request held inside the database while the network goes.
    const hold = await holdKeyLookups();
    cleanups.push(() => hold.release());
    const inFlight = api.call("GET", "/v1/notifications", { key: reader });
    await blockedBackend("tidings-down-proxy");
    await proxy.cut();
    expectUnavailable(await inFlight);
    await hold.release();

    // And the next one, which finds nothing to connect to.
    expectUnavailable(await api.call("GET", "/v1/events", { key: reader }));
  });

  it("an administrator terminates the backend under a request (57P01): 503", async () => {
    const { api } = await apiOn(t.url, "tidings-down-terminated");
    const hold = await holdKeyLookups();
    cleanups.push(() => hold.release());
    const inFlight = api.call("GET", "/v1/events", { key: reader });
    const pid = await blockedBackend("tidings-down-terminated");
    await t.query("select pg_terminate_backend($1)", [pid]);
    expectUnavailable(await inFlight);
    await hold.release();
    // The pool replaces the connection: the API answers again.
    expect((await api.call("GET", "/v1/events", { key: reader })).status).toBe(200);
  });

  it("no pool connection to be had in time (pg-pool's connection timeout): 503", async () => {
    const { api, pool } = await apiOn(t.url, "tidings-down-exhausted", { max: 1, connectionTimeoutMillis: 200 });
    const held = await pool.connect();
    try {
      expectUnavailable(await api.call("GET", "/v1/events", { key: reader }));
    } finally {
      held.release();
    }
    expect((await api.call("GET", "/v1/events", { key: reader })).status).toBe(200);
  });
});
