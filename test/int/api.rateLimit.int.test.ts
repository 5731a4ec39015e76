import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { createApiKey, revokeApiKey, setApiKeyRateLimit } from "../../src/auth/apiKeys";
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import type { ApiAnswer } from "../helpers/api";
import { countingDb, startLimitedApi, type LimitedApi } from "../helpers/limitsApi";

/**
 * The request rate limit of each API key (issue 9, resource limits): kept
 * in PostgreSQL (api.key_request_windows), so every API process counts in
 * the same window; answered with the RateLimit fields of
 * draft-ietf-httpapi-ratelimit-headers-06 on every keyed answer, and 429
 * with Retry-After past the limit. And /metrics, which needs no key: its
 * database gauges are refreshed at most once per interval.
 */

let t: TestDatabase;
const apis: LimitedApi[] = [];
/** A long window: no test here lasts long enough to see one end by itself. */
const WINDOW_SECONDS = 3600;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  for (const api of apis) await api.close();
  await t.close();
});

async function start(options: Partial<Parameters<typeof startLimitedApi>[0]> = {}): Promise<LimitedApi> {
  const api = await startLimitedApi({ pool: t.pool, db: t.db, rateLimit: { limit: 1000, windowSeconds: WINDOW_SECONDS }, ...options });
  apis.push(api);
  return api;
}

async function key(name: string, rateLimit: number | null = null): Promise<{ id: string; secret: string }> {
  const k = await createApiKey(t.db, { name, scopes: ["reader"], createdBy: "test", rateLimit });
  return { id: k.keyId, secret: k.secret };
}

const read = (api: LimitedApi, secret: string) => api.call("GET", "/v1/events", { key: secret });

function rateFields(a: ApiAnswer) {
  return {
    policy: a.headers.get("ratelimit-policy"),
    limit: a.headers.get("ratelimit-limit"),
    remaining: a.headers.get("ratelimit-remaining"),
    reset: Number(a.headers.get("ratelimit-reset")),
  };
}

describe("rate limit per API key", () => {
  it("a key with a low limit is answered 429 with Retry-After and the RateLimit fields after its N requests; another key is not", async () => {
    const api = await start();
    const low = await key("low-limit", 3);
    const other = await key("default-limit");

    for (const remaining of ["2", "1", "0"]) {
      const ok = await read(api, low.secret);
      expect(ok.status).toBe(200);
      expect(rateFields(ok)).toEqual({ policy: `3;w=${WINDOW_SECONDS}`, limit: "3", remaining, reset: expect.any(Number) });
      expect(rateFields(ok).reset).toBeGreaterThanOrEqual(1);
      expect(rateFields(ok).reset).toBeLessThanOrEqual(WINDOW_SECONDS);
    }
    const refused = await read(api, low.secret);
    expect(refused.status).toBe(429);
    expect(refused.contentType).toMatch(/^application\/problem\+json/);
    expect(refused.json).toMatchObject({ type: "urn:tidings:problem:rate-limited", status: 429, limit: 3, windowSeconds: WINDOW_SECONDS });
    expect(refused.json.detail).toMatch(/may make 3 requests per 3600 s/);
    expect(rateFields(refused)).toMatchObject({ policy: `3;w=${WINDOW_SECONDS}`, limit: "3", remaining: "0" });
    // Retry-After is when the window ends: the same as RateLimit-Reset.
    expect(refused.headers.get("retry-after")).toBe(refused.headers.get("ratelimit-reset"));
    expect(rateFields(refused).reset).toBeGreaterThanOrEqual(1);
    // Refused on every endpoint, not only the one that went over.
    expect((await api.call("GET", "/v1/notifications", { key: low.secret })).status).toBe(429);

    // Another key has its own window, with the default limit.
    const theirs = await read(api, other.secret);
    expect(theirs.status).toBe(200);
    expect(rateFields(theirs)).toMatchObject({ policy: `1000;w=${WINDOW_SECONDS}`, limit: "1000", remaining: "999" });

    // When the window is over, the key may go on: a new window starts with its next request.
    await t.query("update api.key_request_windows set window_start = now() - interval '2 hours' where key_id = $1", [low.id]);
    const later = await read(api, low.secret);
    expect(later.status).toBe(200);
    expect(rateFields(later)).toMatchObject({ limit: "3", remaining: "2" });
  });

  it("two API processes on one database share the count", async () => {
    const a = await start();
    const b = await start();
    const shared = await key("two-processes", 4);
    const seen: string[] = [];
    for (const api of [a, b, a, b]) {
      const answer = await read(api, shared.secret);
      expect(answer.status).toBe(200);
      seen.push(answer.headers.get("ratelimit-remaining")!);
    }
    expect(seen).toEqual(["3", "2", "1", "0"]);
    expect((await read(a, shared.secret)).status).toBe(429);
    expect((await read(b, shared.secret)).status).toBe(429);
  });

  it("concurrent requests on two processes: exactly the limit is let through", async () => {
    const a = await start();
    const b = await start();
    const busy = await key("concurrent", 15);
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => read(i % 2 === 0 ? a : b, busy.secret)));
    const statuses = answers.map((x) => x.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(15);
    expect(statuses.filter((s) => s === 429)).toHaveLength(25);
    // Each request let through had its own place in the window: remaining 14 down to 0, once each.
    const remaining = answers.filter((x) => x.status === 200).map((x) => Number(x.headers.get("ratelimit-remaining")));
    expect(remaining.sort((x, y) => x - y)).toEqual(Array.from({ length: 15 }, (_, i) => i));
  });

  it("a key's limit can be changed and takes effect from its next request; unknown and revoked keys are not counted", async () => {
    const api = await start();
    const k = await key("changed-limit", 2);
    expect((await read(api, k.secret)).status).toBe(200);
    expect((await read(api, k.secret)).status).toBe(200);
    expect((await read(api, k.secret)).status).toBe(429);
    await setApiKeyRateLimit(t.db, k.id, 10);
    const raised = await read(api, k.secret);
    expect(raised.status).toBe(200);
    expect(rateFields(raised)).toMatchObject({ limit: "10", remaining: "6" });

    const { rows: before } = await t.query("select count(*)::int as n from api.key_request_windows");
    const unknown = await read(api, "tdk_" + "A".repeat(43));
    expect(unknown.status).toBe(401);
    expect(unknown.headers.get("ratelimit-limit")).toBeNull();
    expect((await t.query("select count(*)::int as n from api.key_request_windows")).rows).toEqual(before);

    await revokeApiKey(t.db, k.id, "test");
    const used = async () => (await t.query("select used from api.key_request_windows where key_id = $1", [k.id])).rows[0].used;
    const usedBefore = await used();
    expect((await read(api, k.secret)).status).toBe(401);
    expect(await used()).toBe(usedBefore);
  });

  it("without a default (API_RATE_LIMIT=0) only keys with a limit of their own are limited", async () => {
    const api = await start({ rateLimit: { limit: 0, windowSeconds: WINDOW_SECONDS } });
    const free = await key("no-limit");
    const limited = await key("own-limit", 1);
    const answer = await read(api, free.secret);
    expect(answer.status).toBe(200);
    expect(answer.headers.get("ratelimit-limit")).toBeNull();
    expect((await read(api, limited.secret)).headers.get("ratelimit-limit")).toBe("1");
    expect((await read(api, limited.secret)).status).toBe(429);
  });
});

describe("who may touch the counts", () => {
  it("a SQL client (tidings_client) can neither read nor reset a key's window, nor raise its limit", async () => {
    const k = await key("guarded", 1);
    const api = await start();
    await read(api, k.secret);
    const client = await t.createLogin({ prefix: "ratelimit_client", grants: ["tidings_client"] });
    await expect(client.pool.query("select * from api.key_request_windows")).rejects.toThrow(/permission denied/);
    await expect(client.pool.query("update api.key_request_windows set used = 0")).rejects.toThrow(/permission denied/);
    await expect(client.pool.query("delete from api.key_request_windows")).rejects.toThrow(/permission denied/);
    await expect(client.pool.query("update api.keys set rate_limit = null")).rejects.toThrow(/permission denied/);
    expect((await read(api, k.secret)).status).toBe(429);
  });
});

describe("npm run apikeys: rate limits", () => {
  const run = promisify(execFile);
  const cli = (...args: string[]) =>
    run(process.execPath, ["--import", "tsx", "scripts/apikeys.ts", ...args], {
      cwd: path.resolve(__dirname, "../.."),
      env: { ...process.env, DATABASE_URL: t.url, LOG_LEVEL: "warn" },
    });

  it("creates a key with a limit, sets it back to the default, and refuses a limit that is not a positive number", async () => {
    const created = await cli("create", "--name", "cli-limited", "--scopes", "reader", "--rate-limit", "2", "--json");
    const key = JSON.parse(created.stdout) as { id: string; secret: string; rateLimit: number | null };
    expect(key.rateLimit).toBe(2);
    const api = await start();
    expect((await read(api, key.secret)).headers.get("ratelimit-limit")).toBe("2");

    const reset = await cli("rate-limit", key.id, "default");
    expect(reset.stdout).toContain("rate limit default (API_RATE_LIMIT)");
    expect((await read(api, key.secret)).headers.get("ratelimit-limit")).toBe("1000");

    await expect(cli("rate-limit", key.id, "0")).rejects.toMatchObject({ stderr: expect.stringContaining('or "default" (got "0")') });
  }, 60_000);
});

describe("/metrics", () => {
  // The jobs gauge's query (src/http/metrics.ts), which reads graphile-worker's public jobs view.
  const JOBS_QUERY = /from graphile_worker\.jobs\b/;

  it("20 concurrent scrapes cause one refresh of the database gauges, and later ones within the interval none", async () => {
    const counting = countingDb(t.pool);
    const api = await start({ db: counting.db, metricsRefreshMs: 60_000 });
    const scrapes = await Promise.all(Array.from({ length: 20 }, () => api.call("GET", "/metrics")));
    for (const s of scrapes) {
      expect(s.status).toBe(200);
      expect(s.text).toMatch(/^tidings_metrics_database_up 1$/m);
    }
    expect(counting.count(JOBS_QUERY)).toBe(1);
    await api.call("GET", "/metrics");
    expect(counting.count(JOBS_QUERY)).toBe(1);
  });

  it("with a refresh interval of 0 every scrape reads the gauges again", async () => {
    const counting = countingDb(t.pool);
    const api = await start({ db: counting.db, metricsRefreshMs: 0 });
    await api.call("GET", "/metrics");
    await api.call("GET", "/metrics");
    expect(counting.count(JOBS_QUERY)).toBe(2);
  });
});
