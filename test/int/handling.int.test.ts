import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { InvalidTransitionError, ValidationError } from "../../src/errors/errors";
import { appendOne } from "../../src/streams/append";
import { claim, completeMany, disableRecord, getHandling, getHistory, setStreamDisabled, transition } from "../../src/streams/handling";
import { HANDLING_STATUSES, type HandlingStatus } from "../../src/streams/interfaces";
import { TRANSITIONS, type HandlingAction } from "../../src/streams/transitions";
import { asOwner, createTestDatabase, declareTestStream, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
const stream = "testing.handled";
const A = "concern_a";
const B = "concern_b";

beforeAll(async () => {
  t = await createTestDatabase(40);
  await declareTestStream(t.adminDb, { stream, producer: "test_producer", consumer: "test_consumer", concern: A });
  await asOwner(t.adminDb, (tx) => sql`select tidings.declare_consumer(${stream}, ${B}, 'test_consumer', null, 'second concern')`.execute(tx));
});
afterAll(async () => {
  await t.close();
});

let counter = 0;
async function newRecord(): Promise<number> {
  counter += 1;
  return (await appendOne(t.adminDb, stream, { id: `h-${counter}`, type: "Thing", payload: {} })).position;
}

const by = { actor: "tester", reason: "because the test says so" };

/** Drive a fresh record to `status` through allowed transitions. */
async function recordIn(status: HandlingStatus): Promise<number> {
  const position = await newRecord();
  const target = { stream, position, concern: A };
  const paths: Record<string, HandlingAction[]> = {
    AvailableByDefault: [],
    Running: ["claim"],
    Completed: ["claim", "complete"],
    Failed: ["claim", "fail"],
    ArchivedAfterFailure: ["claim", "fail", "archive_failure"],
    AvailableAfterCompletion: ["claim", "complete", "reset_completed"],
    AvailableAfterFailure: ["claim", "fail", "reset_failed"],
    AvailableAfterExternalCancellation: ["claim", "cancel"],
    AvailableAfterSelfCancellation: ["claim", "self_cancel"],
    DisabledForRecord: ["disable_for_record"],
  };
  for (const action of paths[status]!) {
    if (action === "claim") expect((await claim(t.adminDb, target, by)).claimed).toBe(true);
    else if (action === "disable_for_record") await disableRecord(t.adminDb, stream, position, by);
    else if (action !== "handle") await transition(t.adminDb, target, action, by);
  }
  expect((await getHandling(t.adminDb, stream, position, A)).status).toBe(status);
  return position;
}

async function apply(position: number, action: HandlingAction) {
  const target = { stream, position, concern: A };
  if (action === "claim" || action === "handle") {
    const r = await claim(t.adminDb, target, { ...by, handle: action === "handle" });
    if (!r.claimed) throw new InvalidTransitionError(action, r.state.status, TRANSITIONS[action].to, r.why);
    return r.state;
  }
  if (action === "disable_for_record") {
    const rows = await disableRecord(t.adminDb, stream, position, by);
    if (rows.length === 0) throw new InvalidTransitionError(action, "DisabledForRecord", "DisabledForRecord", "already");
    return rows.find((r) => r.concern === A)!;
  }
  return transition(t.adminDb, target, action, by);
}

const recordStatuses = HANDLING_STATUSES.filter((s) => s !== "DisabledForStream");

describe("handling transitions", () => {
  for (const action of Object.keys(TRANSITIONS) as HandlingAction[]) {
    const rule = TRANSITIONS[action];
    for (const from of recordStatuses) {
      const allowed = rule.from.includes(from);
      it(`${action} from ${from} is ${allowed ? `allowed → ${rule.to}` : "refused"}`, async () => {
        const position = await recordIn(from);
        if (allowed) {
          const state = await apply(position, action);
          expect(state.status).toBe(rule.to);
          const history = await getHistory(t.adminDb, stream, position, A);
          const last = history.at(-1)!;
          expect(last).toMatchObject({ fromStatus: from, toStatus: rule.to, action, actor: "tester" });
          expect(last.reason).toBe(by.reason);
          expect(last.recordedAt).toBeInstanceOf(Date);
        } else {
          const historyBefore = await getHistory(t.adminDb, stream, position, A);
          await expect(apply(position, action)).rejects.toThrow(InvalidTransitionError);
          if (action !== "claim" && action !== "handle" && action !== "disable_for_record") {
            await expect(apply(position, action)).rejects.toThrow(`current status is ${from}, requested status is ${rule.to}`);
          }
          expect((await getHandling(t.adminDb, stream, position, A)).status).toBe(from);
          expect(await getHistory(t.adminDb, stream, position, A)).toEqual(historyBefore);
        }
      });
    }
  }

  it("requires a reason for every change but complete", async () => {
    const position = await recordIn("Running");
    await expect(transition(t.adminDb, { stream, position, concern: A }, "fail", { actor: "x" })).rejects.toThrow(ValidationError);
    await transition(t.adminDb, { stream, position, concern: A }, "complete", { actor: "x" });
    expect((await getHandling(t.adminDb, stream, position, A)).status).toBe("Completed");
  });

  it("the database itself refuses a forbidden change, even in hand-written SQL", async () => {
    const position = await recordIn("Completed");
    await expect(
      t.query(
        `update testing.handled__handling set status = 'Running', last_action = 'claim', last_reason = 'sneaky'
         where position = $1 and concern = $2`,
        [position, A],
      ),
    ).rejects.toThrow(/cannot claim record \d+ for concern concern_a: current status is Completed, requested status is Running/);
    await expect(t.query(`delete from testing.handled__handling where position = $1`, [position])).rejects.toThrow(/append-only/);
    await expect(t.query(`delete from testing.handled__handling_history where position = $1`, [position])).rejects.toThrow(/append-only/);
  });

  it("keeps concerns independent", async () => {
    const position = await newRecord();
    await claim(t.adminDb, { stream, position, concern: A }, by);
    await transition(t.adminDb, { stream, position, concern: A }, "fail", by);
    expect((await getHandling(t.adminDb, stream, position, A)).status).toBe("Failed");
    expect((await getHandling(t.adminDb, stream, position, B)).status).toBe("AvailableByDefault");
    expect((await claim(t.adminDb, { stream, position, concern: B }, by)).claimed).toBe(true);
  });

  it("disabling a record disables it for every concern, for good", async () => {
    const position = await newRecord();
    await claim(t.adminDb, { stream, position, concern: B }, by);
    const states = await disableRecord(t.adminDb, stream, position, { actor: "ops", reason: "poison record" });
    expect(states.map((s) => [s.concern, s.status]).sort()).toEqual([
      [A, "DisabledForRecord"],
      [B, "DisabledForRecord"],
    ]);
    const result = await claim(t.adminDb, { stream, position, concern: A }, by);
    expect(result).toMatchObject({ claimed: false, state: { status: "DisabledForRecord" } });
  });

  it("a disabled stream claims nothing new, lets running work finish, and resumes when enabled", async () => {
    const running = await recordIn("Running");
    const waiting = await newRecord();
    await setStreamDisabled(t.adminDb, stream, A, true, { actor: "ops", reason: "maintenance" });
    expect((await getHandling(t.adminDb, stream, waiting, A)).status).toBe("DisabledForStream");
    const refused = await claim(t.adminDb, { stream, position: waiting, concern: A }, by);
    expect(refused).toMatchObject({ claimed: false, why: `stream ${stream} is disabled for ${A}` });
    // the other concern is not affected
    expect((await claim(t.adminDb, { stream, position: waiting, concern: B }, by)).claimed).toBe(true);
    // running work may finish
    await transition(t.adminDb, { stream, position: running, concern: A }, "complete", { actor: "x" });

    const { requeued } = await setStreamDisabled(t.adminDb, stream, A, false, { actor: "ops", reason: "maintenance over" });
    expect(requeued).toBeGreaterThanOrEqual(1);
    expect((await claim(t.adminDb, { stream, position: waiting, concern: A }, by)).claimed).toBe(true);
    const history = await t.query(`select disabled, changed_by, reason from tidings.stream_concern_history where stream = $1 and concern = $2 order by entry`, [stream, A]);
    expect(history.rows).toEqual([
      { disabled: true, changed_by: "ops", reason: "maintenance" },
      { disabled: false, changed_by: "ops", reason: "maintenance over" },
    ]);
  });

  it("20 concurrent claimers: exactly one wins, the rest are told it is taken", async () => {
    const position = await newRecord();
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        inTransaction(t.adminDb, null, async (tx) => {
          const r = await claim(tx, { stream, position, concern: A }, { actor: `claimer-${i}`, claimedBy: `claimer-${i}` });
          await sql`select pg_sleep(0.02)`.execute(tx);
          return r;
        }),
      ),
    );
    const winners = results.filter((r) => r.claimed);
    expect(winners).toHaveLength(1);
    for (const loser of results.filter((r) => !r.claimed)) {
      expect(loser).toMatchObject({ state: { status: "Running" } });
      expect((loser as { why: string }).why).toMatch(/already being handled for concern_a \(by claimer-\d+\)/);
    }
    const history = await getHistory(t.adminDb, stream, position, A);
    expect(history).toHaveLength(1);
  });

  it("a worker whose attempt was taken over cannot record its outcome over the new attempt", async () => {
    // Worker A claims (attempt 1), is cut off past its lease; the runner cancels the abandoned attempt and B claims (attempt 2).
    const position = await newRecord();
    const target = { stream, position, concern: A };
    await claim(t.adminDb, target, { actor: "bot", claimedBy: "job 7" });
    await transition(t.adminDb, target, "cancel", { actor: "runner", reason: "attempt 1 abandoned" });
    expect((await claim(t.adminDb, target, { actor: "bot", claimedBy: "job 7" })).state.attempts).toBe(2);

    // A comes back and records what its attempt did: refused, naming the take-over; B's attempt is untouched.
    await expect(completeMany(t.adminDb, { stream, concern: A }, [{ position, attempt: 1 }], "bot")).rejects.toThrow(InvalidTransitionError);
    await expect(transition(t.adminDb, target, "fail", { actor: "bot", reason: "A's failure", attempt: 1 })).rejects.toThrow(/attempt 1 was taken over by attempt 2/);
    expect(await getHandling(t.adminDb, stream, position, A)).toMatchObject({ status: "Running", attempts: 2 });

    // B records its own.
    expect(await completeMany(t.adminDb, { stream, concern: A }, [{ position, attempt: 2 }], "bot")).toMatchObject({ completed: 1 });
    expect((await getHandling(t.adminDb, stream, position, A)).status).toBe("Completed");
  });

  it("the engine's transition table equals the database's", async () => {
    const { rows } = await t.query("select action, from_status, to_status from tidings.handling_transitions");
    const fromDb = rows.map((r) => `${r.action}:${r.from_status}:${r.to_status}`).sort();
    const fromCode = (Object.keys(TRANSITIONS) as HandlingAction[]).flatMap((a) => TRANSITIONS[a].from.map((f) => `${a}:${f}:${TRANSITIONS[a].to}`)).sort();
    expect(fromDb).toEqual(fromCode);
  });
});
