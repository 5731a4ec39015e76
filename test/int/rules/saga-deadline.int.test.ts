/**
 * The saga's deadline, given/when/then (test/helpers/given.ts): no workers,
 * and instead of waiting out the deadline the rules' clock moves on to it.
 */
import { enqueueNotification } from "../../../src/notification/enqueue";
import { Streams } from "../../../src/notification/streams";
import { getLatestById } from "../../../src/streams/read";
import { handlingOf, outcomeOf, startRules, whenSettled, type Rules } from "../../helpers/given";
import { createEntity, person } from "../../helpers/tidings";

let rules: Rules;
beforeAll(async () => {
  rules = await startRules({ sagaDeadlineMs: 1_500 });
});
afterAll(async () => {
  await rules.stop();
});

describe("the saga's deadline", () => {
  it("a channel operation that never completes counts as failed, timed out", async () => {
    await createEntity(rules.t, "slow", person({ email: "slow@example.com", slack: "U0SLOW001" }));
    const started = rules.clock.now().getTime();
    const { trackingId } = await enqueueNotification(rules.t.db, { entityId: "slow", subject: "s", text: "t" });
    // Slack never answers (its bot never records an outcome); the email goes through; time passes.
    await whenSettled(rules, { later: true, except: ["slack.operations:slack_bot"] });
    const outcome = (await outcomeOf(rules, trackingId))!;
    expect(rules.clock.now().getTime() - started).toBeGreaterThanOrEqual(1_400);
    expect(outcome.type).toBe("SentOnSomePreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({
      sent: ["email"],
      failed: ["slack"],
      timedOut: true,
      operations: expect.arrayContaining([expect.objectContaining({ channel: "slack", outcome: "failed", error: "timed out", source: null })]),
    });
    // The failure outcome raises the alert like any other.
    expect(await getLatestById(rules.t.adminDb, Streams.notificationEvents, trackingId, { type: "FailedNotificationSentToInternalTeamEvent" })).not.toBeNull();
  });
});

/**
 * Once a notification has its outcome, its saga's deadline has nothing left
 * to enforce (migrations/0016_unqueue_handling.sql): the deadline job leaves
 * graphile-worker's queue in the transaction that writes the outcome, instead
 * of waiting there for the deadline (about 31 hours for email) to run once for
 * nothing. Own database, the default 60 s deadline: nothing comes due while
 * the test runs.
 */
describe("the saga's deadline once the outcome is written", () => {
  let quick: Rules;
  beforeAll(async () => {
    quick = await startRules();
    await createEntity(quick.t, "ada", person({ email: "ada@example.com", slack: "U0ADA0001" }));
  });
  afterAll(async () => {
    await quick.stop();
  });

  const sagaOf = async (id: string) => (await quick.t.query("select position from notification.sagas where id = $1", [id])).rows.map((r) => Number(r.position));
  const deadlineJobs = async (positions: number[]) =>
    (await quick.t.query("select key, locked_at from graphile_worker._private_jobs where key = any($1::text[])", [positions.map((p) => `notification.sagas:saga_bot:${p}`)])).rows;

  it("takes the deadline job out of the queue and marks the saga record handled, saying why", async () => {
    const { trackingId } = await enqueueNotification(quick.t.db, { entityId: "ada", subject: "prompt", text: "t" });
    await whenSettled(quick, { except: ["notification.sagas:saga_bot"] });
    const [saga] = await sagaOf(trackingId);
    expect(await outcomeOf(quick, trackingId)).toBeDefined();
    expect(await deadlineJobs([saga!])).toEqual([]);
    const handling = await handlingOf(quick, { stream: Streams.notificationSagas, position: saga! }, "saga_bot");
    expect(handling).toMatchObject({
      status: "Completed",
      lastAction: "handle",
      lastActor: "saga_bot",
      lastReason: "the notification has its outcome: no deadline left to enforce",
    });
  });

  it("queues the deadline job until the outcome, then leaves one a worker holds to that worker, without waiting on it", async () => {
    const { trackingId } = await enqueueNotification(quick.t.db, { entityId: "ada", subject: "held", text: "t" });
    // Slack has not answered yet: no outcome, the deadline job waits in the queue.
    await whenSettled(quick, { except: ["slack.operations:slack_bot", "notification.sagas:saga_bot"] });
    expect(await outcomeOf(quick, trackingId)).toBeUndefined();
    const [saga] = await sagaOf(trackingId);
    expect(await deadlineJobs([saga!])).toHaveLength(1);
    // A worker fetched the deadline job (graphile-worker's fetch sets locked_at) and its
    // transaction has claimed the saga record; it is about to wait on the saga's lock.
    await quick.t.query("update graphile_worker._private_jobs set locked_at = now(), locked_by = 'another worker' where key = $1", [`notification.sagas:saga_bot:${saga}`]);
    const worker = await quick.t.pool.connect();
    try {
      await worker.query("begin");
      await worker.query("set local role tidings_saga_bot");
      await worker.query(
        `insert into notification.sagas__handling (position, concern, status, attempts, claimed_by, last_action, last_actor, last_reason)
         values ($1, 'saga_bot', 'Running', 1, 'job 1', 'claim', 'saga_bot', 'claimed by job 1')`,
        [saga],
      );
      // Slack answers: the outcome is written while that transaction is open. Had
      // the outcome's transaction tried to mark the saga record handled, it would
      // wait on the open claim for ever (a deadlock, with the real job).
      await whenSettled(quick, { except: ["notification.sagas:saga_bot"] });
      expect((await outcomeOf(quick, trackingId))?.type).toBe("SentOnAllPreparedChannelsEvent");
      expect(await deadlineJobs([saga!])).toHaveLength(1);
    } finally {
      await worker.query("rollback").catch(() => {});
      worker.release();
    }
    // The claim rolled back: the record waits for its job, which the worker holds.
    expect((await handlingOf(quick, { stream: Streams.notificationSagas, position: saga! }, "saga_bot")).status).toBe("AvailableByDefault");
  });
});
