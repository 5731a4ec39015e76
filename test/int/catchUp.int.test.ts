import { sql } from "kysely";
import type { CatchUpBot } from "../../src/bots/bot";
import { catchUpOnce, startCatchUp, wakeCatchUps } from "../../src/bots/catchUp";
import { inTransaction } from "../../src/db/database";
import { appendOne } from "../../src/streams/append";
import { createTestDatabase, declareTestStream, waitFor, type TestDatabase } from "../helpers/db";
import { testLogger } from "../helpers/worker";

/**
 * The catch-up runner behind the projection: records reach it in commit
 * order, never skipped, at most one process at a time, and a failed batch is
 * repeated from the same checkpoint.
 */
let t: TestDatabase;
const stream = "testing.followed";
const CHECKPOINT = "test_follower";

beforeAll(async () => {
  t = await createTestDatabase();
  await declareTestStream(t.adminDb, { stream, producer: "test_producer", consumer: "test_follower" });
  await t.query(`insert into tidings.checkpoints (name, actor, description) values ($1, 'test_follower', 'test')`, [CHECKPOINT]);
  await t.query(`grant select, update on tidings.checkpoints to tidings_test_follower`);
  await t.query(`grant select, insert on tidings.checkpoint_failures to tidings_test_follower`);
});
afterAll(async () => {
  await t.close();
});

function follower(seen: string[][], fail?: () => boolean): CatchUpBot<object> {
  return {
    kind: "catch-up",
    checkpoint: CHECKPOINT,
    concern: "test_follower",
    actor: "test_follower",
    streams: [stream],
    batchSize: 100,
    async handleBatch({ records }) {
      if (fail?.()) throw new Error("the batch failed");
      seen.push(records.map((r) => r.id));
    },
  };
}

const runtime = () => ({ db: t.db, deps: {}, logger: testLogger, settings: { maxAttempts: 3, retryBaseMs: 50, retryMaxMs: 1000 } });
const cursor = async () => (await t.query(`select cursors from tidings.checkpoints where name = $1`, [CHECKPOINT])).rows[0].cursors;
/** Run the bot until `done` holds (records of other tests' open transactions may hold some back for a moment). */
async function runUntil(bot: CatchUpBot<object>, done: () => boolean | Promise<boolean>, what: string): Promise<void> {
  await waitFor(
    async () => {
      await catchUpOnce(bot, runtime());
      return done();
    },
    { what },
  );
}
const add = (id: string) => inTransaction(t.db, "test_producer", (tx) => appendOne(tx, stream, { id, type: "Thing", payload: {} }));

describe("catch-up bots", () => {
  it("waits for a slower transaction instead of skipping the record it commits later", async () => {
    const seen: string[][] = [];
    const bot = follower(seen);
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let appended!: () => void;
    const slowAppended = new Promise<void>((resolve) => (appended = resolve));
    // The slow transaction takes its position first and commits last.
    const slow = inTransaction(t.db, "test_producer", async (tx) => {
      await appendOne(tx, stream, { id: "slow", type: "Thing", payload: {} });
      appended();
      await held;
    });
    await slowAppended;
    await add("fast");
    expect(await catchUpOnce(bot, runtime())).toBe(0);
    release();
    await slow;
    // Any writing transaction still open on the server (other tests' too) holds records back; wait it out.
    await runUntil(bot, () => seen.flat().length >= 2, "the records to be let through");
    expect(seen.flat()).toEqual(["slow", "fast"]);
    expect(await catchUpOnce(bot, runtime())).toBe(0);
  });

  it("runs in one process at a time: while another holds the checkpoint, it does nothing", async () => {
    const seen: string[][] = [];
    await add("while-held");
    const before = await cursor();
    const other = await t.pool.connect();
    try {
      await other.query("begin");
      await other.query("select pg_advisory_xact_lock(hashtextextended($1, 0))", [`checkpoint ${CHECKPOINT}`]);
      expect(await catchUpOnce(follower(seen), runtime())).toBe(0);
      expect(await cursor()).toEqual(before);
      await other.query("commit");
    } finally {
      other.release();
    }
    await runUntil(follower(seen), () => seen.flat().includes("while-held"), "the record to be handled");
  });

  it("a batch its code fails on once is handled again one id at a time, in the same pass", async () => {
    const seen: string[][] = [];
    await add("retried-1");
    await add("retried-2");
    let failures = 1;
    const bot = follower(seen, () => failures-- > 0);
    await runUntil(bot, () => seen.flat().includes("retried-2"), "the batch");
    const handled = seen.flat();
    expect(handled.indexOf("retried-1")).toBeGreaterThanOrEqual(0);
    expect(handled.indexOf("retried-1")).toBeLessThan(handled.indexOf("retried-2"));
    // The failing batch was handled again id by id: no batch of two after the failure.
    expect(seen.every((b) => b.length === 1)).toBe(true);
    const { rows } = await t.query(`select count(*)::int as n from tidings.checkpoint_failures where id like 'retried-%'`);
    expect(rows[0].n).toBe(0);
  });

  it("names an undeclared checkpoint", async () => {
    const bot = { ...follower([]), checkpoint: "nobody_declared_this" };
    await add("undeclared");
    await expect(catchUpOnce(bot, runtime())).rejects.toThrow('checkpoint "nobody_declared_this" is not declared');
  });

  it("passes over, and records, an id its code fails on; the others are handled and the checkpoint moves", async () => {
    const seen: string[][] = [];
    await add("good-1");
    await add("poison");
    await add("good-2");
    const bot: CatchUpBot<object> = {
      ...follower(seen),
      async handleBatch({ records }) {
        if (records.some((r) => r.id === "poison")) throw new TypeError("cannot read this payload");
        seen.push(records.map((r) => r.id));
      },
    };
    const failed = async () => (await t.query(`select count(*)::int as n from tidings.checkpoint_failures where id = 'poison'`)).rows[0].n > 0;
    await runUntil(bot, async () => seen.flat().includes("good-2") && (await failed()), "the batch");
    expect(seen.flat()).toEqual(expect.arrayContaining(["good-1", "good-2"]));
    expect(seen.flat()).not.toContain("poison");
    const { rows } = await t.query(`select id, error, records from tidings.checkpoint_failures where checkpoint = $1`, [CHECKPOINT]);
    expect(rows).toEqual([{ id: "poison", error: "cannot read this payload", records: [{ stream, position: expect.any(Number) }] }]);
    // Auditors see it, and may not read tidings.* directly.
    const auditor = await t.pool.connect();
    try {
      await auditor.query("begin");
      await auditor.query("set local role tidings_auditor");
      const { rows: audited } = await auditor.query(`select notification_id, error from audit.projection_failures where checkpoint = $1`, [CHECKPOINT]);
      expect(audited).toEqual([{ notification_id: "poison", error: "cannot read this payload" }]);
      await expect(auditor.query("select * from tidings.checkpoint_failures")).rejects.toMatchObject({ code: "42501" });
    } finally {
      await auditor.query("rollback").catch(() => {});
      auditor.release();
    }
    expect(await catchUpOnce(bot, runtime())).toBe(0);
  });

  it("a database error is not passed over: the batch is retried from the same checkpoint", async () => {
    await add("db-error");
    const before = await cursor();
    let calls = 0;
    const bot: CatchUpBot<object> = {
      ...follower([]),
      async handleBatch({ tx }) {
        calls += 1;
        await sql`select 1/0`.execute(tx);
      },
    };
    const failure = await waitFor(
      () =>
        catchUpOnce(bot, runtime()).then(
          () => null,
          (error: Error) => error,
        ),
      { what: "the batch to fail" },
    );
    expect(failure.message).toMatch(/division by zero/);
    expect(calls).toBe(1);
    expect(await cursor()).toEqual(before);
    const { rows } = await t.query(`select count(*)::int as n from tidings.checkpoint_failures where id = 'db-error'`);
    expect(rows[0].n).toBe(0);
    await waitFor(async () => (await catchUpOnce(follower([]), runtime())) > 0, { what: "the record to be handled" });
  });

  describe("between looks", () => {
    /** The loop of `bot` with a database that counts its looks (each opens one transaction). */
    function loop(bot: CatchUpBot<object>, settings: { idleMs: number; maxIdleMs: number }) {
      const counted = { looks: 0 };
      const db = new Proxy(t.db, {
        get(target, prop, receiver) {
          if (prop === "connection") counted.looks += 1;
          const value = Reflect.get(target, prop, receiver) as unknown;
          // Kysely's private fields need the real object as `this`.
          return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
        },
      });
      const running = startCatchUp(bot, { ...runtime(), db }, { ...settings, errorMs: 1_000 }, testLogger);
      return { counted, stop: () => running.stop() };
    }

    it("an idle loop looks less and less often, up to the longest pause", async () => {
      // Pauses of 10, 10, 20, 40 ... ms: without the backoff a second holds about a hundred looks.
      const { counted, stop } = loop(follower([]), { idleMs: 10, maxIdleMs: 60_000 });
      try {
        await new Promise((resolve) => setTimeout(resolve, 1_000));
        expect(counted.looks).toBeGreaterThanOrEqual(2);
        expect(counted.looks).toBeLessThanOrEqual(9);
      } finally {
        await stop();
      }
    });

    it("work committed by this process's bots ends a long pause: the record is handled at once", async () => {
      const seen: string[][] = [];
      const { counted, stop } = loop(follower(seen), { idleMs: 5, maxIdleMs: 60_000 });
      try {
        // Eleven looks: the pause after the eleventh is 5 ms × 2^10, over 5 s, so a record
        // handled within 3 s of the wake was not handled by the timer, however busy the machine.
        await waitFor(async () => counted.looks >= 11, { what: "eleven looks", intervalMs: 10 });
        await new Promise((resolve) => setTimeout(resolve, 100));
        seen.length = 0;
        await add("woken");
        wakeCatchUps();
        await waitFor(async () => seen.flat().includes("woken"), { what: "the woken loop to handle the record", timeoutMs: 3_000, intervalMs: 10 });
      } finally {
        await stop();
      }
    });
  });
});
