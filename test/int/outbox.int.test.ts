import { sql } from "kysely";
import pg from "pg";
import type { TransactionalBot } from "../../src/bots/bot";
import { inTransaction } from "../../src/db/database";
import { appendOne } from "../../src/streams/append";
import { getHandling, getHistory } from "../../src/streams/handling";
import { createTestDatabase, declareTestStream, waitFor, type TestDatabase } from "../helpers/db";
import { startTestWorker } from "../helpers/worker";

let t: TestDatabase;
const stream = "testing.outbox";

beforeAll(async () => {
  t = await createTestDatabase();
  await declareTestStream(t.adminDb, { stream, producer: "test_producer", consumer: "test_consumer" });
});
afterAll(async () => {
  await t.close();
});

async function jobsFor(position: number): Promise<number> {
  const { rows } = await t.query(
    `select count(*)::int as n from graphile_worker._private_jobs j join graphile_worker._private_tasks k on k.id = j.task_id
     where k.identifier = $1 and j.payload->>'position' = $2`,
    [`${stream}:test_consumer`, String(position)],
  );
  return rows[0].n;
}

describe("transactional outbox", () => {
  it("queues a job carrying a pointer to the record, in the appending transaction", async () => {
    const appended = await inTransaction(t.db, "test_producer", (tx) => appendOne(tx, stream, { id: "o-1", type: "Thing", payload: { big: "x".repeat(1000) } }));
    const { rows } = await t.query(
      `select j.payload from graphile_worker._private_jobs j join graphile_worker._private_tasks k on k.id = j.task_id
       where k.identifier = $1`,
      [`${stream}:test_consumer`],
    );
    const payload = rows.find((r) => r.payload.position === appended.position)!.payload;
    expect(payload).toEqual({ stream, position: appended.position, id: "o-1" });
  });

  it("queues nothing when the append rolls back", async () => {
    let position = 0;
    await expect(
      inTransaction(t.db, "test_producer", async (tx) => {
        position = (await appendOne(tx, stream, { id: "o-rollback", type: "Thing", payload: {} })).position;
        expect(await sql`select 1`.execute(tx)).toBeTruthy();
        throw new Error("caller changed its mind");
      }),
    ).rejects.toThrow("caller changed its mind");
    expect(position).toBeGreaterThan(0);
    expect(await jobsFor(position)).toBe(0);
    const rows = await t.query(`select count(*)::int as n from testing.outbox where id = 'o-rollback'`);
    expect(rows.rows[0].n).toBe(0);
  });

  it("runs the consumer's job after commit and completes the record", async () => {
    const handled: string[] = [];
    const bot: TransactionalBot<object> = {
      kind: "transactional",
      stream,
      concern: "test_consumer",
      actor: "test_consumer",
      async handle({ record }) {
        handled.push(record.id);
      },
    };
    const appended = await inTransaction(t.db, "test_producer", (tx) => appendOne(tx, stream, { id: "o-run", type: "Thing", payload: {} }));
    const worker = await startTestWorker(t, [bot], {});
    try {
      await waitFor(async () => (await getHandling(t.adminDb, stream, appended.position, "test_consumer")).status === "Completed", {
        what: "the record to be completed",
      });
      expect(handled).toContain("o-run");
      const history = await getHistory(t.adminDb, stream, appended.position, "test_consumer");
      expect(history.map((h) => [h.fromStatus, h.toStatus])).toEqual([
        ["AvailableByDefault", "Running"],
        ["Running", "Completed"],
      ]);
      expect(history[0]!.actor).toBe("test_consumer");
      expect(history[0]!.reason).toMatch(/claimed by job \d+/);
      // The database role that acted is kept beside the login that carried it.
      expect(history[0]!.recordedBy).toMatch(/ as tidings_test_consumer$/);
    } finally {
      await worker.stop();
    }
  });

  it("queues the jobs of all a transaction's appends together, with one wake-up for the workers, at commit", async () => {
    const listener = new pg.Client({ connectionString: t.url });
    await listener.connect();
    const wakeUps: number[] = [];
    listener.on("notification", (m) => wakeUps.push(JSON.parse(m.payload ?? "{}").count));
    await listener.query('listen "jobs:insert"');
    try {
      const positions = await inTransaction(t.db, "test_producer", async (tx) => {
        const appended = [];
        for (let i = 0; i < 5; i++) appended.push((await appendOne(tx, stream, { id: `o-many-${i}`, type: "Thing", payload: { i } })).position);
        return appended;
      });
      for (const p of positions) expect(await jobsFor(p)).toBe(1);
      await waitFor(async () => wakeUps.length > 0, { what: "the workers' wake-up" });
      await new Promise((resolve) => setTimeout(resolve, 200));
      expect(wakeUps).toEqual([5]);
    } finally {
      await listener.end();
    }
  });

  it("queues nothing for appends rolled back to a savepoint, and the rest as usual", async () => {
    const { kept, dropped } = await inTransaction(t.db, "test_producer", async (tx) => {
      const kept = (await appendOne(tx, stream, { id: "o-kept", type: "Thing", payload: {} })).position;
      await sql`savepoint before_drop`.execute(tx);
      const dropped = (await appendOne(tx, stream, { id: "o-dropped", type: "Thing", payload: {} })).position;
      await sql`rollback to savepoint before_drop`.execute(tx);
      return { kept, dropped };
    });
    expect(await jobsFor(kept)).toBe(1);
    expect(await jobsFor(dropped)).toBe(0);
  });

  it("a hand-written outbox note cannot queue jobs for records the transaction did not write", async () => {
    const earlier = (await inTransaction(t.db, "test_producer", (tx) => appendOne(tx, stream, { id: "o-earlier", type: "Thing", payload: {} }))).position;
    const before = await jobsFor(earlier);
    await inTransaction(t.db, "test_producer", async (tx) => {
      await sql`select set_config('tidings.outbox', ${`D;${stream}=0;no.such_stream=0`}, true)`.execute(tx);
      await appendOne(tx, stream, { id: "o-forged", type: "Thing", payload: {} });
    });
    expect(await jobsFor(earlier)).toBe(before);
    const { rows: ours } = await t.query(`select count(*)::int as n from graphile_worker._private_jobs where payload->>'id' = 'o-forged'`);
    expect(ours[0].n).toBe(1);
  });

  it("with constraints set immediate, every append is queued, the last one too", async () => {
    const positions = await inTransaction(t.db, "test_producer", async (tx) => {
      await sql`set constraints all immediate`.execute(tx);
      const a = (await appendOne(tx, stream, { id: "o-immediate-1", type: "Thing", payload: {} })).position;
      const b = (await appendOne(tx, stream, { id: "o-immediate-2", type: "Thing", payload: {} })).position;
      return [a, b];
    });
    for (const p of positions) expect(await jobsFor(p)).toBe(1);
  });

  it("a stream whose name ends another's is not mistaken for it", async () => {
    const other = "xtesting.outbox";
    await declareTestStream(t.adminDb, { stream: other, producer: "test_producer", consumer: "test_consumer_x" });
    const [a, b] = await inTransaction(t.db, "test_producer", async (tx) => [
      (await appendOne(tx, other, { id: "o-x", type: "Thing", payload: {} })).position,
      (await appendOne(tx, stream, { id: "o-plain", type: "Thing", payload: {} })).position,
    ]);
    expect(await jobsFor(b)).toBe(1);
    const { rows } = await t.query(
      `select count(*)::int as n from graphile_worker._private_jobs j join graphile_worker._private_tasks k on k.id = j.task_id
       where k.identifier = $1 and j.payload->>'position' = $2`,
      [`${other}:test_consumer_x`, String(a)],
    );
    expect(rows[0].n).toBe(1);
  });
});
