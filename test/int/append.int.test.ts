import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { RecordExistsError, append, appendOne } from "../../src/streams/append";
import { findRecords, getAllById, getLatestById, readAfter, FEED_START } from "../../src/streams/read";
import { createTestDatabase, declareTestStream, waitFor, type TestDatabase } from "../helpers/db";

const stream = "testing.append_events";
const feedStreamName = "testing.feed_events";
let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase(60);
  // The engine's own behaviour, on streams of any record type, written as a superuser.
  await declareTestStream(t.adminDb, { stream, producer: "append_writer", consumer: "append_reader" });
  await declareTestStream(t.adminDb, { stream: feedStreamName, producer: "append_writer", consumer: "feed_reader" });
});
afterAll(async () => {
  await t.close();
});

const event = (id: string, type = "SendNotificationRequestedEvent", payload: unknown = { n: 1 }) => ({ id, type, payload });

describe("append", () => {
  it("writes records with increasing positions, metadata and cause", async () => {
    const [a, b] = await append(t.adminDb, stream, [
      event("n-1"),
      { ...event("n-1", "PreparedToSendOnAllChannelsEvent"), tags: { tenant: "acme" }, causedBy: { stream, position: 1 } },
    ]);
    expect(a!.written && b!.written).toBe(true);
    expect(b!.position).toBeGreaterThan(a!.position);
    const latest = await getLatestById(t.adminDb, stream, "n-1");
    expect(latest).toMatchObject({
      id: "n-1",
      type: "PreparedToSendOnAllChannelsEvent",
      tags: { tenant: "acme" },
      causedBy: { stream, position: 1 },
      payload: { n: 1 },
    });
    expect(latest!.recordedAt).toBeInstanceOf(Date);
    expect((await getLatestById(t.adminDb, stream, "n-1", { type: "SendNotificationRequestedEvent" }))!.position).toBe(a!.position);
    expect((await getAllById(t.adminDb, stream, "n-1")).map((r) => r.position)).toEqual([a!.position, b!.position]);
  });

  it("filters by type and tags", async () => {
    await append(t.adminDb, stream, [
      { ...event("f-1"), tags: { tenant: "acme", env: "prod" } },
      { ...event("f-2"), tags: { tenant: "other" } },
      { ...event("f-3", "SentOnAllPreparedChannelsEvent"), tags: { tenant: "acme" } },
    ]);
    const acme = await findRecords(t.adminDb, stream, { tags: { tenant: "acme" }, ids: ["f-1", "f-2", "f-3"] });
    expect(acme.map((r) => r.id)).toEqual(["f-1", "f-3"]);
    const sent = await findRecords(t.adminDb, stream, { types: ["SentOnAllPreparedChannelsEvent"], ids: ["f-1", "f-2", "f-3"] });
    expect(sent.map((r) => r.id)).toEqual(["f-3"]);
  });

  it("skips or throws on an existing record by id, or by id and type", async () => {
    const first = await appendOne(t.adminDb, stream, event("s-1"), "skip_if_id_exists");
    expect(first.written).toBe(true);
    const again = await appendOne(t.adminDb, stream, event("s-1", "OtherEvent"), "skip_if_id_exists");
    expect(again).toMatchObject({ written: false, position: first.position });

    const otherType = await appendOne(t.adminDb, stream, event("s-1", "OtherEvent"), "skip_if_id_and_type_exists");
    expect(otherType.written).toBe(true);
    const sameType = await appendOne(t.adminDb, stream, event("s-1", "OtherEvent"), "skip_if_id_and_type_exists");
    expect(sameType).toMatchObject({ written: false, position: otherType.position });

    await expect(appendOne(t.adminDb, stream, event("s-1", "ThirdEvent"), "throw_if_id_exists")).rejects.toThrow(RecordExistsError);
    await expect(appendOne(t.adminDb, stream, event("s-1", "OtherEvent"), "throw_if_id_and_type_exists")).rejects.toThrow(
      /a record with id "s-1" and type "OtherEvent" already exists/,
    );
    expect(await appendOne(t.adminDb, stream, event("s-1", "ThirdEvent"), "throw_if_id_and_type_exists")).toMatchObject({ written: true });
    expect((await appendOne(t.adminDb, stream, event("s-1"), "write_always")).written).toBe(true);
    expect(await getAllById(t.adminDb, stream, "s-1")).toHaveLength(4);
  });

  it("a batch with a strategy reads as if appended record by record: the first of an id is written, later ones find it", async () => {
    const [existing] = await append(t.adminDb, stream, [event("b-old")]);
    const results = await append(t.adminDb, stream, [event("b-2"), event("b-1"), event("b-2", "OtherEvent"), event("b-old"), event("b-1")], "skip_if_id_exists");
    expect(results.map((r) => [r.id, r.type, r.written])).toEqual([
      ["b-2", "SendNotificationRequestedEvent", true],
      ["b-1", "SendNotificationRequestedEvent", true],
      ["b-2", "OtherEvent", false],
      ["b-old", "SendNotificationRequestedEvent", false],
      ["b-1", "SendNotificationRequestedEvent", false],
    ]);
    // Written in input order; the skipped ones point at what they found.
    expect(results[1]!.position).toBeGreaterThan(results[0]!.position);
    expect(results[2]!.position).toBe(results[0]!.position);
    expect(results[3]!.position).toBe(existing!.position);
    expect(results[4]!.position).toBe(results[1]!.position);

    const byType = await append(t.adminDb, stream, [event("b-3"), event("b-3", "OtherEvent"), event("b-3")], "skip_if_id_and_type_exists");
    expect(byType.map((r) => r.written)).toEqual([true, true, false]);
    expect(byType[2]!.position).toBe(byType[0]!.position);

    // Throwing: a duplicate within the batch is refused like an existing one, naming the first in id order; nothing is stored.
    const before = (await findRecords(t.adminDb, stream, { limit: null })).length;
    await expect(append(t.adminDb, stream, [event("b-9"), event("b-5"), event("b-5")], "throw_if_id_exists")).rejects.toThrow(/a record with id "b-5" already exists/);
    await expect(append(t.adminDb, stream, [event("b-8"), event("b-old")], "throw_if_id_and_type_exists")).rejects.toThrow(
      new RegExp(`a record with id "b-old" and type "SendNotificationRequestedEvent" already exists in stream ${stream} at position ${existing!.position}`),
    );
    expect((await findRecords(t.adminDb, stream, { limit: null })).length).toBe(before);
  });

  it("50 concurrent writers of the same (id, type) with skip produce exactly one row", async () => {
    const results = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        inTransaction(t.adminDb, null, async (tx) => {
          const r = await appendOne(tx, stream, event("race-1", "RaceEvent", { writer: i }), "skip_if_id_and_type_exists");
          // Hold the transaction a moment so writers truly overlap.
          await sql`select pg_sleep(0.01)`.execute(tx);
          return r;
        }),
      ),
    );
    expect(results.filter((r) => r.written)).toHaveLength(1);
    const rows = await t.query("select count(*)::int as n from testing.append_events where id = 'race-1' and type = 'RaceEvent'");
    expect(rows.rows[0].n).toBe(1);
    expect(new Set(results.map((r) => r.position)).size).toBe(1);
  });

  it("refuses UPDATE, DELETE and TRUNCATE on a stream table", async () => {
    await appendOne(t.adminDb, stream, event("immutable-1"));
    await expect(t.query("update testing.append_events set type = 'Changed' where id = 'immutable-1'")).rejects.toThrow(
      /stream testing\.append_events is append-only: UPDATE is not allowed/,
    );
    await expect(t.query("delete from testing.append_events where id = 'immutable-1'")).rejects.toThrow(/append-only: DELETE is not allowed/);
    await expect(t.query("truncate testing.append_events")).rejects.toThrow(/append-only: TRUNCATE is not allowed/);
    expect((await getAllById(t.adminDb, stream, "immutable-1"))[0]!.type).toBe("SendNotificationRequestedEvent");
  });

  it("rejects malformed records with a clear error and stores nothing", async () => {
    const before = (await t.query("select count(*)::int as n from testing.append_events")).rows[0].n;
    await expect(append(t.adminDb, stream, [event("ok-1"), { id: "", type: "X", payload: {} }])).rejects.toThrow(/id/);
    await expect(append(t.adminDb, stream, [{ id: "x", type: "not a type!", payload: {} }])).rejects.toThrow(/type/);
    await expect(append(t.adminDb, "notification.nope", [event("x")])).rejects.toThrow(/unknown stream "notification.nope"/);
    expect((await t.query("select count(*)::int as n from testing.append_events")).rows[0].n).toBe(before);
  });
});

describe("resumable reads", () => {
  it("never skip a record committed late by a slower transaction with a lower position", async () => {
    const feedStream = feedStreamName;
    let cursor = (await readAfter(t.adminDb, feedStream, FEED_START, { limit: 10_000 })).next;

    // The slow transaction takes a position first and commits last.
    const slow = await t.adminPool.connect();
    await slow.query("begin");
    const slowPos = (await slow.query('select position from tidings.append(\'testing.feed_events\', \'[{"id":"slow","type":"SlowEvent","payload":{}}]\'::jsonb)')).rows[0].position;
    const fast = await appendOne(t.adminDb, feedStream, event("fast", "FastEvent"));
    expect(fast.position).toBeGreaterThan(Number(slowPos));

    // While the slow one is open the feed must not move past it.
    const during = await readAfter(t.adminDb, feedStream, cursor);
    expect(during.records.map((r) => r.id)).toEqual([]);
    cursor = during.next;

    await slow.query("commit");
    slow.release();
    // Other tests' transactions on the same server also hold the horizon back
    // for a moment (xids are server-wide), so poll until it passes.
    const after = await waitFor(
      async () => {
        const page = await readAfter(t.adminDb, feedStream, cursor);
        return page.records.length > 0 ? page : undefined;
      },
      { what: "the feed to pass the slow transaction" },
    );
    expect(after.records.map((r) => r.id).sort()).toEqual(["fast", "slow"]);
    const rest = await readAfter(t.adminDb, feedStream, after.next);
    expect(rest.records).toEqual([]);
  });

  it("resumes from a cursor with exactly the later records", async () => {
    const feedStream = "testing.resume_events";
    await declareTestStream(t.adminDb, { stream: feedStream, producer: "append_writer", consumer: "resume_reader" });
    await append(
      t.adminDb,
      feedStream,
      [1, 2, 3, 4, 5].map((i) => event(`r-${i}`, "E")),
    );
    await waitFor(async () => (await readAfter(t.adminDb, feedStream, FEED_START, { limit: 10 })).records.length === 5, {
      what: "the feed to see the five records",
    });
    const page1 = await readAfter(t.adminDb, feedStream, FEED_START, { limit: 2 });
    expect(page1.records.map((r) => r.id)).toEqual(["r-1", "r-2"]);
    const page2 = await readAfter(t.adminDb, feedStream, page1.next, { limit: 10 });
    expect(page2.records.map((r) => r.id)).toEqual(["r-3", "r-4", "r-5"]);
  });
});
