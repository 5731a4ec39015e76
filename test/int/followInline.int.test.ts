/**
 * A bot that follows another's appends inline (TransactionalBot.followsInline):
 * what an external bot records on success is handled by the follower in the
 * same transaction, with its handling in the history and no job queued; when the follower fails, it rolls back alone, the success
 * stays recorded and the follower's job is queued as for any other record.
 * Driven through the runner's own pipeline (handleBatch), no worker running,
 * so the queue shows exactly which jobs the outbox added.
 */
import { sql } from "kysely";
import type { BotRuntime, ExternalBot, TransactionalBot } from "../../src/bots/bot";
import { handleBatch, inlineFollowersOf } from "../../src/bots/runner";
import { inTransaction } from "../../src/db/database";
import { createLogger } from "../../src/logging/logger";
import { append, appendFor, appendOne } from "../../src/streams/append";
import { getHandling, getHistory } from "../../src/streams/handling";
import { findRecords } from "../../src/streams/read";
import { asOwner, createTestDatabase, declareTestStream, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
const sends = "testing.sends";
const sent = "testing.sent";
const followed = "testing.followed";

beforeAll(async () => {
  t = await createTestDatabase();
  await declareTestStream(t.adminDb, { stream: sends, producer: "test_producer", consumer: "sender_bot" });
  await asOwner(t.adminDb, async (tx) => {
    await sql`select tidings.declare_stream(${sent}, 'testing', 'event', null, array['Sent', 'Other'], 'what the sender did')`.execute(tx);
    await sql`select tidings.declare_producer(${sent}, 'sender_bot')`.execute(tx);
    await sql`select tidings.declare_stream(${followed}, 'testing', 'event', null, null, 'what the follower did')`.execute(tx);
  });
  await declareTestStream(t.adminDb, { stream: "testing.unused", producer: "follower_bot", consumer: "follower_bot" });
  await asOwner(t.adminDb, async (tx) => {
    await sql`select tidings.declare_consumer(${sent}, 'follower_bot', 'follower_bot', array['Sent'], 'follows the sends')`.execute(tx);
    await sql`select tidings.declare_producer(${followed}, 'follower_bot')`.execute(tx);
  });
});
afterAll(async () => {
  await t.close();
});

const sender: ExternalBot<object, string> = {
  kind: "external",
  stream: sends,
  concern: "sender_bot",
  actor: "sender_bot",
  batch: { maxSize: 8 },
  async perform({ record }) {
    return `receipt for ${record.id}`;
  },
  async succeeded(ctx) {
    await appendFor(ctx, sent, { id: ctx.record.id, type: "Sent", payload: { receipt: ctx.result }, causedBy: ctx.record });
  },
};

/** Ids whose next inline handling throws (a bug in the follower's code, by construction). */
const failInlineFor = new Set<string>();
const follower: TransactionalBot<object> = {
  kind: "transactional",
  stream: sent,
  concern: "follower_bot",
  actor: "follower_bot",
  followsInline: { recordTypes: ["Sent"] },
  // A job's batch of one comes here (inline, the follower always gets handleBatch).
  async handle({ tx, record }) {
    await append(tx, followed, [{ id: record.id, type: "Followed", payload: {}, causedBy: record }]);
  },
  async handleBatch({ tx, records }) {
    for (const r of records) {
      if (failInlineFor.delete(r.id)) throw new Error(`follower failed on ${r.id}`);
    }
    await append(
      tx,
      followed,
      records.map((r) => ({ id: r.id, type: "Followed", payload: {}, causedBy: r })),
    );
  },
};

const runtime = (): BotRuntime<object> => ({ db: t.db, deps: {}, logger: createLogger("silent"), settings: { maxAttempts: 3, retryBaseMs: 10, retryMaxMs: 100 } });

/** The keys of the jobs waiting for this task (the outbox keys each '<task>:<position>'). */
async function queuedJobs(task: string): Promise<string[]> {
  const { rows } = await t.query(`select key from graphile_worker.jobs where task_identifier = $1 order by id`, [task]);
  return rows.map((r) => r.key as string);
}

async function send(id: string): Promise<number> {
  const position = (await inTransaction(t.db, "test_producer", (tx) => appendOne(tx, sends, { id, type: "Send", payload: {} }))).position;
  const outcomes = await handleBatch(sender, runtime(), [{ position, jobTag: `job for ${id}` }], inlineFollowersOf(sender, [sender, follower]));
  expect([...outcomes.values()]).toEqual(["completed"]);
  return position;
}

describe("a bot that follows inline", () => {
  it("is offered to external bots only", () => {
    expect(inlineFollowersOf(sender, [sender, follower])).toEqual([follower]);
    expect(inlineFollowersOf(follower, [sender, follower])).toEqual([]);
  });

  it("handles the success in the transaction that records it: claimed and completed there, no job queued", async () => {
    await send("inline-1");
    const [record] = await findRecords(t.adminDb, sent, { ids: ["inline-1"] });
    expect(record?.type).toBe("Sent");
    expect((await findRecords(t.adminDb, followed, { ids: ["inline-1"] })).map((r) => [r.type, r.causedBy?.position])).toEqual([["Followed", record!.position]]);
    // Same transaction: the follower's record and the sender's carry one tx_id.
    const { rows } = await t.query(
      `select count(distinct tx_id)::int as n from (select tx_id from testing.sent where id = $1 union all select tx_id from testing.followed where id = $1) x`,
      ["inline-1"],
    );
    expect(rows[0].n).toBe(1);
    expect((await getHandling(t.adminDb, sent, record!.position, "follower_bot")).status).toBe("Completed");
    const history = await getHistory(t.adminDb, sent, record!.position, "follower_bot");
    // Claimed and completed in one step (action handle): one entry, naming who handled it where.
    expect(history.map((h) => [h.action, h.actor, h.fromStatus, h.toStatus])).toEqual([["handle", "follower_bot", "AvailableByDefault", "Completed"]]);
    expect(history[0]!.reason).toBe(`handled by inline after ${sends}:sender_bot`);
    expect(await queuedJobs(`${sent}:follower_bot`)).toEqual([]);
  });

  it("when the follower fails, the success stays recorded and the follower's job is queued instead", async () => {
    failInlineFor.add("inline-2");
    await send("inline-2");
    const [record] = await findRecords(t.adminDb, sent, { ids: ["inline-2"] });
    expect(record?.type).toBe("Sent");
    expect(await findRecords(t.adminDb, followed, { ids: ["inline-2"] })).toEqual([]);
    // Nothing of the failed attempt is left: no handling row, no history.
    expect((await getHandling(t.adminDb, sent, record!.position, "follower_bot")).status).toBe("AvailableByDefault");
    expect(await getHistory(t.adminDb, sent, record!.position, "follower_bot")).toEqual([]);
    expect(await queuedJobs(`${sent}:follower_bot`)).toEqual([`${sent}:follower_bot:${record!.position}`]);

    // The job, run by the pipeline, handles it as any other record.
    const outcomes = await handleBatch(follower, runtime(), [{ position: record!.position, jobTag: "job 1" }]);
    expect([...outcomes.values()]).toEqual(["completed"]);
    expect((await findRecords(t.adminDb, followed, { ids: ["inline-2"] })).length).toBe(1);
  });
});
