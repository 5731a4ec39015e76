/**
 * Issue 9.6: the horizon of gap-safe reads (the feed, the projection)
 * depends only on transactions that append to the streams being read. An
 * unrelated long transaction, in this database or another, holds nothing
 * back; a transaction appending to a stream holds back only that stream's
 * readers; and a record committed late by a transaction that started early
 * is never skipped.
 */
import pg from "pg";
import { inTransaction } from "../../src/db/database";
import { createMetrics } from "../../src/http/metrics";
import { enqueueNotification } from "../../src/notification/enqueue";
import { appendOne } from "../../src/streams/append";
import { Streams } from "../../src/notification/streams";
import { FEED_START, nudgeHorizon, readAfter, type FeedCursor } from "../../src/streams/read";
import { databaseUrl, declareTestStream, waitFor } from "../helpers/db";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

let app: Tidings;
const streamA = "testing.horizon_a";
const streamB = "testing.horizon_b";

beforeAll(async () => {
  app = await startTidings();
  await createEntity(app.t, "ada", person());
  await declareTestStream(app.t.adminDb, { stream: streamA, producer: "horizon_writer", consumer: "horizon_reader_a" });
  await declareTestStream(app.t.adminDb, { stream: streamB, producer: "horizon_writer", consumer: "horizon_reader_b" });
});
afterAll(async () => {
  await app.stop();
});

/** A session held open on a transaction, until released. */
async function openTransaction(url: string, statements: string[]): Promise<{ client: pg.Client; finish(commit?: boolean): Promise<void> }> {
  const client = new pg.Client({ connectionString: url });
  // The server may end the session (the bound of the last test): the query in flight says so.
  client.on("error", () => {});
  await client.connect();
  await client.query("begin");
  for (const s of statements) await client.query(s);
  return {
    client,
    async finish(commit = false) {
      await client.query(commit ? "commit" : "rollback");
      await client.end();
    },
  };
}

const read = (stream: string, after: FeedCursor = FEED_START) => readAfter(app.t.adminDb, stream, after, { limit: 1000 });
const append = (stream: string, id: string) => inTransaction(app.t.db, "horizon_writer", (tx) => appendOne(tx, stream, { id, type: "Thing", payload: {} }));

describe("the read horizon", () => {
  it("an open transaction that took an id, here and in another database, does not hold a notification's view back", async () => {
    const here = await openTransaction(app.t.adminUrl, ["create temporary table busy (x int)", "insert into busy values (1)", "select pg_current_xact_id()"]);
    const elsewhere = await openTransaction(databaseUrl("postgres"), ["select pg_current_xact_id()"]);
    try {
      const { trackingId } = await enqueueNotification(app.t.db, { entityId: "ada", subject: "while others wait", text: "t" });
      await waitForOutcome(app.t, trackingId);
      // The projection (a gap-safe reader) wrote the view while both stayed open.
      const view = await waitFor(
        async () => {
          const { rows } = await app.t.query("select payload->>'status' as status from notification.views where id = $1 order by position desc limit 1", [trackingId]);
          return rows[0]?.status === "sent" ? rows[0] : undefined;
        },
        { what: "the view to say sent" },
      );
      expect(view.status).toBe("sent");
      // And the feed serves the notification's events.
      const feed = await read(Streams.notificationEvents);
      expect(feed.records.filter((r) => r.id === trackingId).map((r) => r.type)).toContain("SentOnAllPreparedChannelsEvent");
    } finally {
      await here.finish();
      await elsewhere.finish();
    }
  });

  it("a transaction appending to a stream holds back that stream's readers only, and nothing is skipped when it commits", async () => {
    const startA = (await read(streamA)).next;
    const startB = (await read(streamB)).next;
    const slow = await openTransaction(app.t.url, ["set local role tidings_horizon_writer"]);
    await slow.client.query(`select * from tidings.append('${streamA}', '[{"id":"slow","type":"Thing","payload":{}}]'::jsonb)`);
    await append(streamA, "fast-a");
    await append(streamB, "fast-b");
    // Stream B's reader is not held back by a transaction that writes only A.
    expect((await read(streamB, startB)).records.map((r) => r.id)).toEqual(["fast-b"]);
    // Stream A's reader waits: "fast-a" was committed after "slow" took its place.
    expect((await read(streamA, startA)).records.map((r) => r.id)).toEqual([]);
    await slow.finish(true);
    expect((await read(streamA, startA)).records.map((r) => r.id)).toEqual(["slow", "fast-a"]);
  });

  it("/metrics shows what the horizon holds back and how far the projection is behind", async () => {
    const slow = await openTransaction(app.t.url, ["set local role tidings_horizon_writer"]);
    await slow.client.query(`select * from tidings.append('${streamA}', '[{"id":"held-slow","type":"Thing","payload":{}}]'::jsonb)`);
    await append(streamA, "held-fast");
    const metrics = createMetrics();
    const text = await metrics.render(app.t.db);
    const held = new RegExp(`tidings_read_waiting_records\\{reader="horizon",stream="${streamA.replace(".", "\\.")}"\\} (\\d+)`).exec(text);
    expect(Number(held?.[1])).toBeGreaterThanOrEqual(1);
    expect(text).toMatch(/tidings_read_lag_seconds\{reader="checkpoint:notification_views",stream="notification\.events"\} /);
    await slow.finish(true);
    const after = await metrics.render(app.t.db);
    expect(after).toMatch(new RegExp(`tidings_read_waiting_records\\{reader="horizon",stream="${streamA.replace(".", "\\.")}"\\} 0`));
  });

  it("a transaction that began before a record was read and appends only afterwards is still read after it", async () => {
    const start = (await read(streamA)).next;
    // An early transaction: it has an id, older than the next append's, but has not appended yet.
    const early = await openTransaction(app.t.url, ["select pg_current_xact_id()", "set local role tidings_horizon_writer"]);
    await append(streamA, "later-but-first");
    const seen = await read(streamA, start);
    expect(seen.records.map((r) => r.id)).toEqual(["later-but-first"]);
    // Only now does it append, and commit: the reader, past "later-but-first", must still get it.
    await early.client.query(`select * from tidings.append('${streamA}', '[{"id":"early","type":"Thing","payload":{}}]'::jsonb)`);
    await early.finish(true);
    // Its key is the horizon itself on a quiet server: the reader says so, a nudge moves it.
    const waiting = await read(streamA, seen.next);
    if (waiting.records.length === 0) {
      expect(waiting.stalled).toBe(true);
      await nudgeHorizon(app.t.adminDb);
    }
    expect((await read(streamA, seen.next)).records.map((r) => r.id)).toEqual(["early"]);
  });

  it("reads in the order of the feed keys as numbers, across a power of ten (997 before 1004)", async () => {
    const stream = "testing.horizon_order";
    await declareTestStream(app.t.adminDb, { stream, producer: "horizon_writer", consumer: "horizon_reader_o" });
    // Keys set by hand (the stamping trigger off, as superuser): the order of transaction ids past 999.
    const client = await app.t.adminPool.connect();
    try {
      await client.query("set session_replication_role = replica");
      await client.query(`insert into ${stream} (id, type, payload, feed_key, tx_id, recorded_by) values
        ('first', 'Happened', '{}', '997', '997', 'test'), ('second', 'Happened', '{}', '1004', '1004', 'test'), ('third', 'Happened', '{}', '1004', '1004', 'test')`);
    } finally {
      await client.query("reset session_replication_role");
      client.release();
    }
    const all = await readAfter(app.t.adminDb, stream, FEED_START, { horizon: "2000" });
    expect(all.records.map((r) => [r.id, r.feedKey])).toEqual([
      ["first", "997"],
      ["second", "1004"],
      ["third", "1004"],
    ]);
    expect(all.next).toEqual({ key: "1004", position: all.records[2]!.position });
    // In pages of one, each record once, in order: the cursor never goes back.
    const paged: string[] = [];
    for (let cursor: FeedCursor = FEED_START; ;) {
      const page = await readAfter(app.t.adminDb, stream, cursor, { horizon: "2000", limit: 1 });
      if (page.records.length === 0) break;
      paged.push(page.records[0]!.id);
      cursor = page.next;
    }
    expect(paged).toEqual(["first", "second", "third"]);
  });

  it("refuses to compute a horizon in a transaction that would read with the same snapshot", async () => {
    const client = new pg.Client({ connectionString: app.t.adminUrl });
    await client.connect();
    try {
      await client.query("begin isolation level repeatable read");
      await expect(client.query(`select tidings.feed_horizon(array['${streamA}'])`)).rejects.toThrow(/needs a READ COMMITTED transaction/);
    } finally {
      await client.query("rollback");
      await client.end();
    }
  });

  it("a transaction that appended is ended by the database past the bound, running or idle", async () => {
    await app.t.query("update tidings.settings set value = '1s' where name = 'append_transaction_timeout'");
    try {
      const client = await app.t.createLogin({ prefix: "lingering", grants: ["tidings_client"] });
      const running = await openTransaction(client.url, ["select notification.send_notification_to_entity('ada', 's', 't')"]);
      await expect(running.client.query("select pg_sleep(5)")).rejects.toThrow(/timeout/);
      await running.client.end();
      const idle = await openTransaction(client.url, ["select notification.send_notification_to_entity('ada', 's', 't')"]);
      const ended = new Promise((resolve) => idle.client.once("end", resolve));
      await ended;
      await expect(idle.client.query("select 1")).rejects.toThrow();
      // A transaction that did not append is not bounded by tidings.
      const other = await openTransaction(client.url, ["select 1"]);
      await other.client.query("select pg_sleep(1.5)");
      await other.finish();
    } finally {
      await app.t.query("update tidings.settings set value = '60s' where name = 'append_transaction_timeout'");
    }
  });
});
