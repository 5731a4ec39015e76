/**
 * Issue 9.5: the outbox keeps which of a transaction's appends it queued in a
 * transaction-local setting (tidings.outbox) that the transaction can
 * overwrite. Made harmless: a caller can only keep its own records' jobs
 * from being queued, and the handling sweep finds every record waiting with
 * no job and queues it; a job deleted from the queue is found the same way.
 */
import { sweepHandling } from "../../src/streams/handling";
import { Streams } from "../../src/notification/streams";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

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
  it("its writer inserts with the caller's privileges: a role that does not produce the stream is refused", async () => {
    const client = await app.t.createLogin({ prefix: "writer", grants: ["tidings_client"] });
    const records = JSON.stringify([{ id: "forged", type: "SendNotificationRequestedEvent", payload: {} }]);
    // The client produces client operations, not notification events.
    await expect(client.pool.query("select * from tidings.stream_write__notification__events($1::jsonb, null)", [records])).rejects.toMatchObject({ code: "42501" });
    await expect(client.pool.query("select * from tidings.append('notification.events', $1::jsonb)", [records])).rejects.toMatchObject({ code: "42501" });
    const { rows } = await app.t.query("select count(*)::int as n from notification.events where id = 'forged'");
    expect(rows[0].n).toBe(0);
  });

  it("its outbox reader and its id lookup are the engine's alone: no login or actor may call them", async () => {
    for (const grants of [["tidings_client"], ["tidings_service"], ["tidings_operator"], ["tidings_auditor"], ["tidings_notification_bot"], ["tidings_projection_bot"]]) {
      const login = await app.t.createLogin({ prefix: "reader", grants });
      await expect(login.pool.query("select * from tidings.outbox_read__notification__events(0)")).rejects.toMatchObject({ code: "42501" });
      // existing_positions checks who asks before it looks; its per-stream lookup would tell anyone which ids exist.
      await expect(login.pool.query("select * from tidings.stream_locate__notification__events(array['x'], array[null])")).rejects.toMatchObject({ code: "42501" });
    }
  });
});
