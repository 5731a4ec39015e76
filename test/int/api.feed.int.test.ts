import { inTransaction } from "../../src/db/database";
import { append } from "../../src/streams/append";
import { Streams } from "../../src/notification/streams";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";

let t: TestDatabase;
let api: TestApi;
let reader: string;

beforeAll(async () => {
  t = await createTestDatabase();
  api = await startApi(t, { feedPollMs: 50 });
  reader = await apiKey(t, ["reader"]);
});
afterAll(async () => {
  await api.close();
  await t.close();
});

/** Append notification events in one transaction, as the notification bot does. */
async function appendEvents(...ids: string[]): Promise<void> {
  await inTransaction(t.db, "notification_bot", (tx) =>
    append(
      tx,
      Streams.notificationEvents,
      ids.map((id) => ({ id, type: "SendNotificationRequestedEvent", payload: { n: id } })),
    ),
  );
}

const feed = (query = "") => api.call("GET", `/v1/events${query}`, { key: reader });

/** Everything in the feed after `after`, once `count` events are visible (other tests' transactions on the server hold the horizon back for a moment). */
async function readUntil(count: number, after?: string) {
  return waitFor(
    async () => {
      const answer = await feed(after ? `?after=${after}` : "");
      return answer.json.events.length >= count ? answer.json : undefined;
    },
    { what: `${count} events in the feed` },
  );
}

describe("GET /v1/events", () => {
  let tail: string;

  it("starts at the beginning without a cursor and resumes from one with exactly the later events", async () => {
    const empty = await feed();
    expect(empty.status).toBe(200);
    expect(empty.json).toEqual({ events: [], next: "0-0" });

    await appendEvents("f-1", "f-2", "f-3");
    const first = await readUntil(3);
    expect(first.events.map((e: { id: string }) => e.id)).toEqual(["f-1", "f-2", "f-3"]);
    expect(first.events[0]).toMatchObject({
      cursor: expect.stringMatching(/^\d+-\d+$/),
      type: "SendNotificationRequestedEvent",
      payload: { n: "f-1" },
      tags: {},
      causedBy: null,
      recordedAt: expect.any(String),
    });
    expect(first.next).toBe(first.events[2].cursor);

    await appendEvents("f-4", "f-5");
    const later = await readUntil(2, first.next);
    expect(later.events.map((e: { id: string }) => e.id)).toEqual(["f-4", "f-5"]);
    expect((await feed(`?after=${later.next}`)).json).toEqual({ events: [], next: later.next });

    // From any event's own cursor: the ones after it, no more, no fewer.
    const fromSecond = await feed(`?after=${first.events[1].cursor}`);
    expect(fromSecond.json.events.map((e: { id: string }) => e.id)).toEqual(["f-3", "f-4", "f-5"]);

    // Paging with limit walks the same sequence.
    const seen: string[] = [];
    let cursor = "0-0";
    for (let i = 0; i < 10; i++) {
      const page = (await feed(`?after=${cursor}&limit=2`)).json;
      if (page.events.length === 0) break;
      expect(page.events.length).toBeLessThanOrEqual(2);
      seen.push(...page.events.map((e: { id: string }) => e.id));
      cursor = page.next;
    }
    expect(seen).toEqual(["f-1", "f-2", "f-3", "f-4", "f-5"]);
    tail = later.next;
  });

  it("long-polls: a waiting request answers as soon as an event arrives", async () => {
    const started = Date.now();
    const pending = feed(`?after=${tail}&wait=25`);
    // Append only once the server is really waiting, so the answer must come from the wait.
    await waitFor(async () => (await api.metrics.feedWaiting.get()).values[0]?.value === 1, { what: "the request to be waiting" });
    await appendEvents("f-6");
    const answer = await pending;
    expect(answer.status).toBe(200);
    expect(answer.json.events.map((e: { id: string }) => e.id)).toEqual(["f-6"]);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect((await api.metrics.feedWaiting.get()).values[0]?.value).toBe(0);
    tail = answer.json.next;
  });

  it("long-polls: with nothing new it answers empty after the wait, with the same cursor", async () => {
    const started = Date.now();
    const answer = await feed(`?after=${tail}&wait=1`);
    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(answer.json).toEqual({ events: [], next: tail });
  });

  it("stops waiting when the client goes away", async () => {
    const abort = new AbortController();
    const pending = fetch(`${api.url}/v1/events?after=${tail}&wait=30`, { headers: { authorization: `Bearer ${reader}` }, signal: abort.signal });
    await waitFor(async () => (await api.metrics.feedWaiting.get()).values[0]?.value === 1, { what: "the request to be waiting" });
    abort.abort();
    await expect(pending).rejects.toThrow(/abort/i);
    await waitFor(async () => (await api.metrics.feedWaiting.get()).values[0]?.value === 0, { timeoutMs: 5_000, what: "the server to stop waiting" });
  });
});
