import { sql } from "kysely";
import type { TransactionalBot } from "../../src/bots/bot";
import { backoffMs } from "../../src/bots/runner";
import { inTransaction } from "../../src/db/database";
import { ExternalError } from "../../src/errors/errors";
import { append, appendOne } from "../../src/streams/append";
import { getHandling, getHistory } from "../../src/streams/handling";
import { getAllById } from "../../src/streams/read";
import { asOwner, createTestDatabase, declareTestStream, waitFor, type TestDatabase } from "../helpers/db";
import { startTestWorker } from "../helpers/worker";

let t: TestDatabase;
const stream = "testing.work";
const out = "testing.results";
const concern = "worker_bot";

beforeAll(async () => {
  t = await createTestDatabase();
  await declareTestStream(t.adminDb, { stream, producer: "test_producer", consumer: concern });
  await asOwner(t.adminDb, async (tx) => {
    await sql`select tidings.declare_stream(${out}, 'testing', 'event', null, null, 'results')`.execute(tx);
    await sql`select tidings.declare_producer(${out}, ${concern})`.execute(tx);
  });
});
afterAll(async () => {
  await t.close();
});

async function appendWork(id: string, payload: Record<string, unknown>): Promise<number> {
  return (await inTransaction(t.db, "test_producer", (tx) => appendOne(tx, stream, { id, type: "Work", payload }))).position;
}

const attemptsById = new Map<string, number>();
const bot: TransactionalBot<object> = {
  kind: "transactional",
  stream,
  concern,
  actor: concern,
  async handle({ tx, record, attempt }) {
    const p = record.payload as { mode: string; failTimes?: number };
    attemptsById.set(record.id, attempt);
    // Written in the handler's transaction: must vanish if the handler throws.
    await append(tx, out, [{ id: record.id, type: "Touched", payload: { attempt }, causedBy: record }]);
    if (p.mode === "flaky" && attempt <= (p.failTimes ?? 0)) throw new ExternalError(`flaky ${attempt}`, true);
    if (p.mode === "permanent") throw new ExternalError("no such mailbox", false, { code: 550 });
    if (p.mode === "always") throw new Error("database hiccup");
    if (p.mode === "later" && attempt === 1) return { retryAfterMs: 200, reason: "waiting for the other side" };
    if (p.mode === "cross") await append(tx, "notification.events", [{ id: record.id, type: "Hacked", payload: {} }]);
  },
};

describe("bot runner", () => {
  let worker: Awaited<ReturnType<typeof startTestWorker>>;
  beforeAll(async () => {
    worker = await startTestWorker(t, [bot], {}, { maxAttempts: 3, retryBaseMs: 50 });
  });
  afterAll(async () => {
    await worker.stop();
  });

  const statusOf = (position: number) => getHandling(t.adminDb, stream, position, concern);

  it("retries a transient failure with backoff and completes; each attempt is in the history", async () => {
    const position = await appendWork("flaky-2", { mode: "flaky", failTimes: 2 });
    await waitFor(async () => (await statusOf(position)).status === "Completed", { what: "completion" });
    const history = await getHistory(t.adminDb, stream, position, concern);
    expect(history.map((h) => h.action)).toEqual(["claim", "fail", "reset_failed", "claim", "fail", "reset_failed", "claim", "complete"]);
    expect(history[1]!.reason).toBe("attempt 1 failed: flaky 1");
    expect(history[2]!.reason).toMatch(/^transient failure; attempt 2 of 3 in \d+ ms$/);
    // Failed attempts rolled back what their handler wrote: only the third attempt's record remains.
    const touched = await getAllById(t.adminDb, out, "flaky-2");
    expect(touched.map((r) => (r.payload as { attempt: number }).attempt)).toEqual([3]);
    expect(touched[0]!.causedBy).toEqual({ stream, position });
  });

  it("fails a permanent failure at once, keeping the error", async () => {
    const position = await appendWork("perm", { mode: "permanent" });
    await waitFor(async () => (await statusOf(position)).status === "Failed", { what: "failure" });
    const state = await statusOf(position);
    expect(state.attempts).toBe(1);
    expect(state.lastError).toBe("no such mailbox");
    expect(state.lastReason).toBe("permanent failure on attempt 1: no such mailbox");
    expect(state.lastDetails).toMatchObject({ attempt: 1, transient: false, external: { code: 550 } });
    expect(await getAllById(t.adminDb, out, "perm")).toEqual([]);
  });

  it("gives up after the configured attempts and ends Failed", async () => {
    const position = await appendWork("always", { mode: "always" });
    await waitFor(async () => (await statusOf(position)).status === "Failed", { what: "failure" });
    const state = await statusOf(position);
    expect(state.attempts).toBe(3);
    expect(state.lastReason).toBe("gave up after attempt 3: database hiccup");
  });

  it("lets a handler ask to be tried again later (self-cancel)", async () => {
    const position = await appendWork("later", { mode: "later" });
    await waitFor(async () => (await statusOf(position)).status === "Completed", { what: "completion" });
    const history = await getHistory(t.adminDb, stream, position, concern);
    expect(history.map((h) => `${h.action}:${h.toStatus}`)).toEqual(["claim:Running", "self_cancel:AvailableAfterSelfCancellation", "claim:Running", "complete:Completed"]);
    expect(history[1]!.reason).toBe("waiting for the other side");
    const gap = history[2]!.recordedAt.getTime() - history[1]!.recordedAt.getTime();
    expect(gap).toBeGreaterThanOrEqual(150);
  });

  it("a bot writing a stream it does not produce is refused by PostgreSQL, and the record fails", async () => {
    const position = await appendWork("cross", { mode: "cross" });
    await waitFor(async () => (await statusOf(position)).status === "Failed", { what: "failure" });
    expect((await statusOf(position)).lastError).toMatch(/refused by PostgreSQL: permission denied/);
    expect((await statusOf(position)).attempts).toBe(1);
    const { rows } = await t.query(`select count(*)::int as n from notification.events where id = 'cross'`);
    expect(rows[0].n).toBe(0);
  });

  it("backs off exponentially, capped", () => {
    const half = () => 0.5;
    expect([1, 2, 3, 4].map((a) => backoffMs(a, 100, 500, half))).toEqual([100, 200, 400, 500]);
  });
});
