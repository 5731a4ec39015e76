import type { TransactionalBot } from "../../src/bots/bot";
import { inTransaction } from "../../src/db/database";
import { append } from "../../src/streams/append";
import { getHandling, getHistory } from "../../src/streams/handling";
import { createTestDatabase, declareTestStream, waitFor, type TestDatabase } from "../helpers/db";
import { startTestWorker } from "../helpers/worker";

let t: TestDatabase;
const stream = "testing.batched";

beforeAll(async () => {
  t = await createTestDatabase();
  await declareTestStream(t.adminDb, { stream, producer: "test_producer", consumer: "batch_consumer" });
});
afterAll(async () => {
  await t.close();
});

async function commits(): Promise<number> {
  const { rows } = await t.query("select xact_commit::bigint as n from pg_stat_database where datname = current_database()");
  return Number(rows[0].n);
}

describe("batched handling", () => {
  it("handles many records in few transactions; a bad record fails alone; coalescing handles each id once", async () => {
    const handled: Array<{ id: string; position: number }> = [];
    const bot: TransactionalBot<object> = {
      kind: "transactional",
      stream,
      concern: "batch_consumer",
      actor: "batch_consumer",
      batch: { maxSize: 50, coalesceById: true },
      async handle({ record }) {
        if ((record.payload as { bad?: boolean }).bad) throw new Error("poison record");
        handled.push({ id: record.id, position: record.position });
      },
    };
    // 200 records over 100 ids (two each), one poison record.
    const records = Array.from({ length: 200 }, (_, i) => ({ id: `b-${i % 100}`, type: "Thing", payload: { bad: i === 150 } }));
    const appended = await inTransaction(t.db, "test_producer", (tx) => append(tx, stream, records));
    const before = await commits();
    const worker = await startTestWorker(t, [bot], {}, { concurrency: 16, maxAttempts: 1 });
    try {
      await waitFor(
        async () => {
          const { rows } = await t.query(`select count(*)::int as n from testing.batched__handling where status in ('Completed', 'Failed')`);
          return rows[0].n === 200;
        },
        { what: "all 200 records handled", timeoutMs: 30_000 },
      );
    } finally {
      await worker.stop();
    }
    const poison = appended[150]!.position;
    expect((await getHandling(t.adminDb, stream, poison, "batch_consumer")).status).toBe("Failed");
    expect((await getHandling(t.adminDb, stream, poison, "batch_consumer")).lastError).toBe("poison record");
    const { rows } = await t.query(`select status, count(*)::int as n from testing.batched__handling group by status order by status`);
    expect(rows).toEqual([
      { status: "Completed", n: 199 },
      { status: "Failed", n: 1 },
    ]);
    // Each id was handled at least once, and far fewer than 200 times in all.
    expect(new Set(handled.map((h) => h.id)).size).toBe(100);
    // Far fewer transactions than records (graphile-worker's own fetches and completions included).
    expect((await commits()) - before).toBeLessThan(200);
    // History of a normal record: one claim, one completion.
    const history = await getHistory(t.adminDb, stream, appended[0]!.position, "batch_consumer");
    expect(history.map((h) => h.action)).toEqual(["claim", "complete"]);
  });

  it("a set-based bot gets whole batches, one record per id, and a failing batch falls back to one record at a time", async () => {
    const setStream = "testing.set_based";
    await declareTestStream(t.adminDb, { stream: setStream, producer: "test_producer", consumer: "set_consumer" });
    const calls: Array<{ how: "batch" | "one"; ids: string[] }> = [];
    const bot: TransactionalBot<object> = {
      kind: "transactional",
      stream: setStream,
      concern: "set_consumer",
      actor: "set_consumer",
      batch: { maxSize: 50, coalesceById: true },
      async handle({ record }) {
        calls.push({ how: "one", ids: [record.id] });
      },
      async handleBatch({ records }) {
        if (records.some((r) => (r.payload as { failsInBatch?: boolean }).failsInBatch)) throw new Error("batch refused");
        calls.push({ how: "batch", ids: records.map((r) => r.id) });
      },
    };
    // 120 records over 60 ids, and one the batch handler refuses (an id of its own, so coalescing cannot hide it).
    const records = [
      ...Array.from({ length: 120 }, (_, i) => ({ id: `s-${i % 60}`, type: "Thing", payload: { failsInBatch: false } })),
      { id: "s-poison", type: "Thing", payload: { failsInBatch: true } },
    ];
    await inTransaction(t.db, "test_producer", (tx) => append(tx, setStream, records));
    const worker = await startTestWorker(t, [bot], {}, { concurrency: 32, maxAttempts: 1 });
    try {
      await waitFor(
        async () => {
          const { rows } = await t.query(`select count(*)::int as n from testing.set_based__handling where status = 'Completed'`);
          return rows[0].n === 121;
        },
        { what: "all 121 records completed", timeoutMs: 30_000 },
      );
    } finally {
      await worker.stop();
    }
    const batches = calls.filter((c) => c.how === "batch");
    // Batches formed, and no batch carried an id twice.
    expect(batches.some((b) => b.ids.length > 1)).toBe(true);
    for (const b of batches) expect(new Set(b.ids).size).toBe(b.ids.length);
    // The batch holding the refusing record was retried one record at a time.
    expect(calls.some((c) => c.how === "one" && c.ids[0] === "s-poison")).toBe(true);
    expect(batches.some((b) => b.ids.includes("s-poison"))).toBe(false);
    // Every id was handled.
    expect(new Set(calls.flatMap((c) => c.ids))).toEqual(new Set([...Array.from({ length: 60 }, (_, i) => `s-${i}`), "s-poison"]));
  });
});
