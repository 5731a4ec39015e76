import { inTransaction } from "../../src/db/database";
import { append } from "../../src/streams/append";
import { Streams } from "../../src/notification/streams";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { apiKey } from "../helpers/api";
import { FEED_READ, countingDb, startLimitedApi, type LimitedApi } from "../helpers/limitsApi";

/**
 * Long-polls of GET /v1/events (issue 9, resource limits): they share one
 * poller (one read of the feed per tick, whatever their number), are capped
 * per API key and per process (429 with Retry-After), and a stopping server
 * answers them at once.
 */

let t: TestDatabase;
let reader: string;
let otherReader: string;
const apis: LimitedApi[] = [];

beforeAll(async () => {
  t = await createTestDatabase();
  reader = await apiKey(t, ["reader"], "feed-reader");
  otherReader = await apiKey(t, ["reader"], "other-feed-reader");
});
afterAll(async () => {
  for (const api of apis) await api.close();
  await t.close();
});

async function start(options: Partial<Parameters<typeof startLimitedApi>[0]> = {}): Promise<LimitedApi> {
  const api = await startLimitedApi({ pool: t.pool, db: t.db, feedPollMs: 50, ...options });
  apis.push(api);
  return api;
}

async function appendEvents(...ids: string[]): Promise<void> {
  await inTransaction(t.db, "notification_bot", (tx) =>
    append(
      tx,
      Streams.notificationEvents,
      ids.map((id) => ({ id, type: "SendNotificationRequestedEvent", payload: { n: id } })),
    ),
  );
}

const waiting = async (api: LimitedApi) => (await api.metrics.feedWaiting.get()).values[0]?.value ?? 0;
const polls = async (api: LimitedApi) => (await api.metrics.feedPolls.get()).values[0]?.value ?? 0;

/** The feed's end now: the cursor a client at the tail waits after. */
async function tail(api: LimitedApi): Promise<string> {
  return (await api.call("GET", "/v1/events?limit=1000", { key: reader })).json.next;
}

/** A long-poll the test can abandon (the client goes away). */
function longPoll(api: LimitedApi, key: string, query: string) {
  const abort = new AbortController();
  const answer = fetch(`${api.url}/v1/events?${query}`, { headers: { authorization: `Bearer ${key}` }, signal: abort.signal }).then(async (res) => ({
    status: res.status,
    headers: res.headers,
    json: (await res.json()) as any,
  }));
  answer.catch(() => {});
  return { answer, abandon: () => abort.abort() };
}

describe("one poller for every waiting request", () => {
  it("20 waiters cost one read of the feed per tick, and each gets the event as soon as it is readable", async () => {
    const counting = countingDb(t.pool);
    const api = await start({ db: counting.db, feedWaitLimits: { perKey: 20, total: 40 } });
    const after = await tail(api);

    const started = Date.now();
    const waits = Array.from({ length: 20 }, (_, i) => longPoll(api, i % 2 === 0 ? reader : otherReader, `after=${after}&wait=25`));
    await waitFor(async () => (await waiting(api)) === 20, { what: "20 requests waiting" });

    // Every waiter has made its own first read; from here on, only the poller reads.
    const reads = counting.count(FEED_READ);
    const ticks = await polls(api);
    await waitFor(async () => (await polls(api)) >= ticks + 5, { what: "five ticks of the poller" });
    const tickCount = (await polls(api)) - ticks;
    const readCount = counting.count(FEED_READ) - reads;
    // The poller counts a tick as it reads, the log records the read when it is answered: at most one apart.
    expect(readCount).toBeGreaterThanOrEqual(tickCount - 1);
    expect(readCount).toBeLessThanOrEqual(tickCount + 1);
    expect(await waiting(api)).toBe(20);

    await appendEvents("wait-1");
    const answers = await Promise.all(waits.map((w) => w.answer));
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect(a.json.events.map((e: { id: string }) => e.id)).toEqual(["wait-1"]);
      expect(a.json.next).toBe(a.json.events[0].cursor);
    }
    // Answered by the event, not by the end of the wait.
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(await waiting(api)).toBe(0);
  });

  it("waiters with different limits each get the events after their cursor, up to their own limit", async () => {
    const api = await start();
    const before = await tail(api);
    await appendEvents("c-1", "c-2");
    const page = await waitFor(
      async () => {
        const a = await api.call("GET", `/v1/events?after=${before}`, { key: reader });
        return a.json.events.length === 2 ? a.json : undefined;
      },
      { what: "two events in the feed" },
    );
    const afterFirst = page.events[0].cursor as string;
    const afterSecond = page.events[1].cursor as string;

    // Both wait at the tail (after c-2), one with limit 1, the other with limit 5.
    const one = longPoll(api, reader, `after=${afterSecond}&wait=25&limit=1`);
    const five = longPoll(api, otherReader, `after=${afterSecond}&wait=25&limit=5`);
    await waitFor(async () => (await waiting(api)) === 2, { what: "two requests waiting" });
    await appendEvents("c-3", "c-4");
    expect((await one.answer).json.events.map((e: { id: string }) => e.id)).toEqual(["c-3"]);
    expect((await five.answer).json.events.map((e: { id: string }) => e.id)).toEqual(["c-3", "c-4"]);

    // A request behind the tail does not wait at all: its own read answers it.
    const behind = await api.call("GET", `/v1/events?after=${afterFirst}&wait=25`, { key: reader });
    expect(behind.json.events.map((e: { id: string }) => e.id)).toEqual(["c-2", "c-3", "c-4"]);
  });
});

describe("caps", () => {
  it("past the cap per key: 429 too-many-waits with Retry-After; other keys and reads without wait go on", async () => {
    const api = await start({ feedWaitLimits: { perKey: 2, total: 3 } });
    const after = await tail(api);
    const mine = [longPoll(api, reader, `after=${after}&wait=20`), longPoll(api, reader, `after=${after}&wait=20`)];
    await waitFor(async () => (await waiting(api)) === 2, { what: "two requests of one key waiting" });

    const refused = await api.call("GET", `/v1/events?after=${after}&wait=5`, { key: reader });
    expect(refused.status).toBe(429);
    expect(refused.contentType).toMatch(/^application\/problem\+json/);
    expect(refused.json).toMatchObject({ type: "urn:tidings:problem:too-many-waits", status: 429, cap: 2, capScope: "key" });
    expect(refused.json.detail).toMatch(/already has 2 requests waiting/);
    // The first of the key's waits ends within 20 s: that is when a place frees at the latest.
    const retryAfter = Number(refused.headers.get("retry-after"));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(20);

    // Not waiting is never capped.
    expect((await api.call("GET", `/v1/events?after=${after}`, { key: reader })).status).toBe(200);

    // Another key may wait, up to the process's cap of 3; then that key too is refused, naming the process.
    const theirs = longPoll(api, otherReader, `after=${after}&wait=20`);
    await waitFor(async () => (await waiting(api)) === 3, { what: "three requests waiting" });
    const full = await api.call("GET", `/v1/events?after=${after}&wait=5`, { key: otherReader });
    expect(full.status).toBe(429);
    expect(full.json).toMatchObject({ type: "urn:tidings:problem:too-many-waits", cap: 3, capScope: "process" });
    expect(Number(full.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);

    // A client that leaves gives its place back.
    mine[0]!.abandon();
    await waitFor(async () => (await waiting(api)) === 2, { what: "the abandoned wait to end" });
    const again = longPoll(api, reader, `after=${after}&wait=20`);
    await waitFor(async () => (await waiting(api)) === 3, { what: "the freed place to be taken" });
    for (const w of [mine[1]!, theirs, again]) w.abandon();
    await waitFor(async () => (await waiting(api)) === 0, { what: "every wait to end" });
  });
});

describe("stopping", () => {
  it("server close with three waiters returns within a second; each wait answers an empty page with its cursor", async () => {
    const api = await start();
    const after = await tail(api);
    const waits = [0, 1, 2].map(() => longPoll(api, reader, `after=${after}&wait=30`));
    await waitFor(async () => (await waiting(api)) === 3, { what: "three requests waiting" });

    // What npm start does on SIGTERM: abort, then server.close() (which waits for every connection).
    const started = Date.now();
    api.stopping.abort();
    await api.closeGracefully();
    expect(Date.now() - started).toBeLessThan(1_000);
    for (const w of waits) {
      const a = await w.answer;
      expect(a.status).toBe(200);
      expect(a.json).toEqual({ events: [], next: after });
    }
    expect(await waiting(api)).toBe(0);
  });
});
