/**
 * Issue 9.5: the outbox keeps which of a transaction's appends it queued in a
 * transaction-local setting (tidings.outbox) that the transaction can
 * overwrite. Made harmless: a caller can only keep its own records' jobs
 * from being queued, and the handling sweep finds every record waiting with
 * no job and queues it; a job deleted from the queue is found the same way.
 */
import { inTransaction } from "../../src/db/database";
import { appendOne } from "../../src/streams/append";
import { claim, sweepHandling } from "../../src/streams/handling";
import { Streams } from "../../src/notification/streams";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { asOwner, declareTestActor, declareTestStream } from "../helpers/db";
import { sql } from "kysely";

let app: Tidings;

beforeAll(async () => {
  app = await startTidings();
  await createEntity(app.t, "ada", person());
});
afterAll(async () => {
  await app.stop();
});

const jobsFor = async (id: string) => (await app.t.query("select count(*)::int as n from graphile_worker._private_jobs where payload->>'id' = $1", [id])).rows[0].n as number;

describe("a forged outbox note", () => {
  it("keeps only the forger's own job from being queued, and the sweep queues it: the notification is sent", async () => {
    const client = await app.t.createLogin({ prefix: "forger", grants: ["tidings_client"] });
    const session = await client.pool.connect();
    let id: string;
    try {
      await session.query("begin");
      // Claims that everything up to a far position of client_operations was queued already.
      await session.query("select set_config('tidings.outbox', 'C;notification.client_operations=999999999', true)");
      id = (await session.query("select notification.send_notification_to_entity('ada', 'forged note', 'text') as id")).rows[0].id;
      await session.query("commit");
    } finally {
      session.release();
    }
    // The forgery worked on its own record: no job.
    expect(await jobsFor(id)).toBe(0);
    const swept = await sweepHandling(app.t.db);
    expect(swept.find((r) => r.stream === Streams.notificationClientOperations && r.concern === "notification_bot")?.queued).toBe(1);
    const outcome = await waitForOutcome(app.t, id);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    expect(app.smtp.messages.filter((m) => m.subject === "forged note")).toHaveLength(1);
  });

  it("a job deleted from the queue before it ran is queued again, and nothing settled is queued twice", async () => {
    await app.worker!.stop();
    const id = (await app.t.query("select notification.send_notification_to_entity('ada', 'lost job', 'text') as id")).rows[0].id as string;
    await app.t.query("delete from graphile_worker._private_jobs where payload->>'id' = $1", [id]);
    const swept = await sweepHandling(app.t.db);
    expect(swept.reduce((n, r) => n + r.queued, 0)).toBe(1);
    // A second sweep finds the job queued: nothing more.
    expect((await sweepHandling(app.t.db)).reduce((n, r) => n + r.queued, 0)).toBe(0);
    await app.startWorker();
    expect((await waitForOutcome(app.t, id)).type).toBe("SentOnAllPreparedChannelsEvent");
    expect(app.smtp.messages.filter((m) => m.subject === "lost job")).toHaveLength(1);
    // Once sent, sweeping again queues nothing, and the cursor of the notification bot's concern has passed it.
    expect((await sweepHandling(app.t.db)).reduce((n, r) => n + r.queued, 0)).toBe(0);
    const { rows } = await app.t.query(
      `select k.position >= c.position as passed from tidings.sweep_cursors k, notification.client_operations c
       where k.stream = 'notification.client_operations' and k.concern = 'notification_bot' and c.id = $1`,
      [id],
    );
    expect(rows).toEqual([{ passed: true }]);
  });
});

describe("each stream's statements written out (migration 0013)", () => {
  /** The name of a stream's own function, as the engine derives it. */
  const fn = async (prefix: string, stream: string) => (await app.t.query("select tidings.stream_function_name($1, $2) as name", [prefix, stream])).rows[0].name as string;

  it("two streams never share a function, whatever their names", async () => {
    // Without the hash, "a__b.c" and "a.b__c" would both be ..._a__b__c, and long names would be cut to one prefix.
    expect(await fn("stream_write__", "a__b.c")).not.toBe(await fn("stream_write__", "a.b__c"));
    const long = "customer_notifications_eu.scheduled_reminders_v";
    const [v1, v2] = [await fn("handling_history__", `${long}1`), await fn("handling_history__", `${long}2`)];
    expect(v1).not.toBe(v2);
    expect(Buffer.byteLength(v1)).toBeLessThanOrEqual(63);
    // Every declared stream has its own writer, lookup and reader.
    const { rows } = await app.t.query(
      `select count(*)::int as streams,
              count(distinct to_regprocedure('tidings.' || tidings.stream_writer(name) || '(jsonb, integer[])'))::int as writers,
              count(distinct to_regprocedure('tidings.' || tidings.stream_locator(name) || '(text[], text[])'))::int as locators,
              count(distinct to_regprocedure('tidings.' || tidings.outbox_reader(name) || '(bigint)'))::int as readers
       from tidings.streams`,
    );
    expect(rows[0]).toEqual({ streams: rows[0].streams, writers: rows[0].streams, locators: rows[0].streams, readers: rows[0].streams });
  });

  it("its writer inserts with the caller's privileges: a role that does not produce the stream is refused", async () => {
    const client = await app.t.createLogin({ prefix: "writer", grants: ["tidings_client"] });
    const records = JSON.stringify([{ id: "forged", type: "SendNotificationRequestedEvent", payload: {} }]);
    // The client produces client operations, not notification events.
    const writer = await fn("stream_write__", "notification.events");
    await expect(client.pool.query(`select * from tidings."${writer}"($1::jsonb, null)`, [records])).rejects.toMatchObject({ code: "42501" });
    await expect(client.pool.query("select * from tidings.append('notification.events', $1::jsonb)", [records])).rejects.toMatchObject({ code: "42501" });
    const { rows } = await app.t.query("select count(*)::int as n from notification.events where id = 'forged'");
    expect(rows[0].n).toBe(0);
  });

  it("its outbox reader, its id lookup and the functions that make them are the engine's alone: no login or actor may call them", async () => {
    const [reader, locator] = [await fn("outbox_read__", "notification.events"), await fn("stream_locate__", "notification.events")];
    for (const grants of [["tidings_client"], ["tidings_service"], ["tidings_operator"], ["tidings_auditor"], ["tidings_notification_bot"], ["tidings_projection_bot"]]) {
      const login = await app.t.createLogin({ prefix: "reader", grants });
      await expect(login.pool.query(`select * from tidings."${reader}"(0)`)).rejects.toMatchObject({ code: "42501" });
      // existing_positions checks who asks before it looks; its per-stream lookup would tell anyone which ids exist.
      await expect(login.pool.query(`select * from tidings."${locator}"(array['x'], array[null])`)).rejects.toMatchObject({ code: "42501" });
      // Nor may anyone make or remake a stream's functions, triggers or feed index (migrations 0011, 0013, 0014).
      for (const maker of ["create_stream_writer", "create_stream_locator", "create_outbox_reader", "create_handling_history_triggers", "follow_stream"]) {
        await expect(login.pool.query(`select tidings.${maker}('notification.events')`)).rejects.toMatchObject({ code: "42501" });
      }
    }
  });
});

describe("the outbox's skip of records claimed inline (migration 0015)", () => {
  let quiet: Tidings;
  beforeAll(async () => {
    // No worker: the queue shows exactly which jobs the outbox added.
    quiet = await startTidings({ autoStart: false });
  });
  afterAll(async () => {
    await quiet.stop();
  });

  it("is not granted to a hand-written claim: the operator, producer and repairer of a stream, still gets its record's job queued", async () => {
    const position = await inTransaction(quiet.t.db, "operator", async (tx) => {
      const { position } = await appendOne(tx, Streams.notificationInternalOperations, { id: "forged-inline", type: "ResendNotificationOp", payload: {} });
      // In the same transaction, a Running row that looks like a worker process's inline claim, under a person's name.
      const claimed = await claim(
        tx,
        { stream: Streams.notificationInternalOperations, position, concern: "internal_operation_bot" },
        { actor: "bea", reason: "by hand", claimedBy: "inline:00000000-0000-4000-8000-000000000000" },
      );
      expect(claimed.claimed).toBe(true);
      return position;
    });
    const { rows } = await quiet.t.query("select count(*)::int as n from graphile_worker._private_jobs where key = $1", [
      `notification.internal_operations:internal_operation_bot:${position}`,
    ]);
    expect(rows[0].n).toBe(1);
  });
});

/**
 * tidings.unqueue_handling (migrations/0016) takes queued jobs out of
 * graphile-worker's queue: allowed to the concern's own consumer (the saga,
 * once a notification has its outcome) and to an operator, as queue_handling
 * is. Anyone else who could take a record's job away would stop its work.
 */
/** tidings.unqueue_handling of a client operation's notification_bot job, in a transaction of its own acting as `role`: the positions whose job a worker holds. */
async function unqueueClientOperationAs(role: string, position: number): Promise<number[]> {
  const session = await app.t.pool.connect();
  try {
    await session.query("begin");
    await session.query(`set local role ${role}`);
    const { rows } = await session.query("select tidings.unqueue_handling('notification.client_operations', 'notification_bot', array[$1::bigint]) as held", [position]);
    await session.query("commit");
    return rows[0].held as number[];
  } finally {
    await session.query("rollback").catch(() => {});
    session.release();
  }
}

describe("taking a record's job out of the queue", () => {
  it("is refused to a bot of another concern and to a client; the job stays and the notification is sent", async () => {
    await app.worker!.stop();
    const id = (await app.t.query("select notification.send_notification_to_entity('ada', 'kept job', 'text') as id")).rows[0].id as string;
    const position = Number((await app.t.query("select position from notification.client_operations where id = $1", [id])).rows[0].position);
    const attempt = (role: string) => unqueueClientOperationAs(role, position);
    // The email bot may unqueue its own concern's jobs, not the notification bot's.
    await expect(attempt("tidings_email_bot")).rejects.toMatchObject({
      code: "42501",
      message: expect.stringMatching(/may not unqueue the handling of stream notification.client_operations/),
    });
    // A client has no use of the function at all.
    await expect(attempt("tidings_client")).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/permission denied for function unqueue_handling/) });
    expect(await jobsFor(id)).toBe(1);
    await app.startWorker();
    expect((await waitForOutcome(app.t, id)).type).toBe("SentOnAllPreparedChannelsEvent");
  });

  it("is granted to an operator declared later (a handling repairer), for a concern not its own, and refused to it before", async () => {
    await asOwner(app.t.adminDb, (tx) => declareTestActor(tx, "later_operator"));
    await app.worker!.stop();
    const id = (await app.t.query("select notification.send_notification_to_entity('ada', 'unqueued by an operator', 'text') as id")).rows[0].id as string;
    const position = Number((await app.t.query("select position from notification.client_operations where id = $1", [id])).rows[0].position);
    const unqueue = () => unqueueClientOperationAs("tidings_later_operator", position);
    // An actor, not yet an operator: no use of the function.
    await expect(unqueue()).rejects.toMatchObject({ code: "42501", message: expect.stringMatching(/permission denied for function unqueue_handling/) });
    expect(await jobsFor(id)).toBe(1);
    await asOwner(app.t.adminDb, (tx) => sql`select tidings.declare_handling_repairer('later_operator')`.execute(tx));
    expect(await unqueue()).toEqual([]);
    expect(await jobsFor(id)).toBe(0);
    // Nothing is lost: the record still waits, and the sweep queues its job again.
    await sweepHandling(app.t.db);
    expect(await jobsFor(id)).toBe(1);
    await app.startWorker();
    expect((await waitForOutcome(app.t, id)).type).toBe("SentOnAllPreparedChannelsEvent");
  });

  it("is granted to a consumer declared later, for its own stream only", async () => {
    await declareTestStream(app.t.adminDb, { stream: "testing.later", producer: "later_producer", consumer: "later_consumer" });
    const session = await app.t.pool.connect();
    try {
      await session.query("begin");
      await session.query("set local role tidings_later_consumer");
      const { rows } = await session.query("select tidings.unqueue_handling('testing.later', 'later_consumer', array[1::bigint]) as held");
      expect(rows[0].held).toEqual([]);
      await session.query("savepoint other");
      await expect(session.query("select tidings.unqueue_handling('notification.client_operations', 'notification_bot', array[1::bigint])")).rejects.toMatchObject({
        code: "42501",
        message: expect.stringMatching(/may not unqueue/),
      });
      await session.query("rollback to savepoint other");
    } finally {
      await session.query("rollback").catch(() => {});
      session.release();
    }
  });
});
