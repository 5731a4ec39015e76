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
  await declareTestStream(t.db, { stream, producer: "test_producer", consumer: "batch_consumer" });
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
      await waitFor(async () => {
        const { rows } = await t.query(`select count(*)::int as n from testing.batched__handling where status in ('Completed', 'Failed')`);
        return rows[0].n === 200;
      }, { what: "all 200 records handled", timeoutMs: 30_000 });
    } finally {
      await worker.stop();
    }
    const poison = appended[150]!.position;
    expect((await getHandling(t.db, stream, poison, "batch_consumer")).status).toBe("Failed");
    expect((await getHandling(t.db, stream, poison, "batch_consumer")).lastError).toBe("poison record");
    const { rows } = await t.query(`select status, count(*)::int as n from testing.batched__handling group by status order by status`);
    expect(rows).toEqual([{ status: "Completed", n: 199 }, { status: "Failed", n: 1 }]);
    // Each id was handled at least once, and far fewer than 200 times in all.
    expect(new Set(handled.map((h) => h.id)).size).toBe(100);
    // Far fewer transactions than records (graphile-worker's own fetches and completions included).
    expect((await commits()) - before).toBeLessThan(200);
    // History of a normal record: one claim, one completion.
    const history = await getHistory(t.db, stream, appended[0]!.position, "batch_consumer");
    expect(history.map((h) => h.action)).toEqual(["claim", "complete"]);
  });
});
