import { sql } from "kysely";
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
  await declareTestStream(t.db, { stream, producer: "test_producer", consumer: "test_consumer" });
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
    const appended = await inTransaction(t.db, "test_producer", (tx) =>
      appendOne(tx, stream, { id: "o-1", type: "Thing", payload: { big: "x".repeat(1000) } }),
    );
    const { rows } = await t.query(
      `select j.payload from graphile_worker._private_jobs j join graphile_worker._private_tasks k on k.id = j.task_id
       where k.identifier = $1`, [
      `${stream}:test_consumer`,
    ]);
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
    const appended = await inTransaction(t.db, "test_producer", (tx) =>
      appendOne(tx, stream, { id: "o-run", type: "Thing", payload: {} }),
    );
    const worker = await startTestWorker(t, [bot], {});
    try {
      await waitFor(async () => (await getHandling(t.db, stream, appended.position, "test_consumer")).status === "Completed", {
        what: "the record to be completed",
      });
      expect(handled).toContain("o-run");
      const history = await getHistory(t.db, stream, appended.position, "test_consumer");
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
});
