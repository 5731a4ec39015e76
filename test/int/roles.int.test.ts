import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { ForbiddenError } from "../../src/errors/errors";
import { appendOne } from "../../src/streams/append";
import { Streams } from "../../src/notification/streams";
import { WebhookStreams } from "../../src/webhooks/webhook.streams";
import { claim } from "../../src/streams/handling";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t.close();
});

const op = (id: string) => ({ id, type: "SendNotificationToEntityOp", payload: {} });

async function asActor<T>(actor: string, fn: Parameters<typeof inTransaction<T>>[2]): Promise<T> {
  return inTransaction(t.db, actor, fn);
}

describe("who may write what, enforced by PostgreSQL", () => {
  it("the registry lists every stream the code knows, with producers and consumers", async () => {
    const { rows } = await t.query("select name, kind from tidings.streams where name not like 'testing.%' order by name");
    expect(rows.map((r) => r.name)).toEqual([...Object.values(Streams), ...Object.values(WebhookStreams)].sort());
    const producers = await t.query("select actor from tidings.stream_producers where stream = 'email.operations' order by actor");
    // The saga writes the next channel's operation when it falls back (delivery: fallback);
    // the webhook bot its alert when it disables a failing endpoint.
    expect(producers.rows.map((r) => r.actor)).toEqual(["internal_operation_bot", "notification_bot", "saga_bot", "webhook_bot"]);
    const consumers = await t.query("select concern, task_identifier from tidings.stream_consumers where stream = 'email.operations'");
    expect(consumers.rows).toEqual([{ concern: "email_bot", task_identifier: "email.operations:email_bot" }]);
  });

  it("a producer appends to its stream but cannot read what is in it", async () => {
    const appended = await asActor("client", (tx) => appendOne(tx, Streams.notificationClientOperations, op("r-1")));
    expect(appended.written).toBe(true);
    await expect(asActor("client", (tx) => sql`select payload from notification.client_operations`.execute(tx))).rejects.toThrow(/permission denied for table client_operations/);
    // idempotent appends still work without read access
    const again = await asActor("client", (tx) => appendOne(tx, Streams.notificationClientOperations, op("r-1"), "skip_if_id_and_type_exists"));
    expect(again).toMatchObject({ written: false, position: appended.position });
  });

  it("an actor writing a stream it does not produce is refused", async () => {
    await expect(asActor("client", (tx) => appendOne(tx, Streams.emailOperations, { id: "x", type: "SendEmailOp", payload: {} }))).rejects.toThrow(ForbiddenError);
    await expect(asActor("email_bot", (tx) => appendOne(tx, Streams.notificationEvents, { id: "x", type: "Forged", payload: {} }))).rejects.toThrow(
      /refused by PostgreSQL: permission denied/,
    );
    // the saga bot reads the email events but does not produce them
    await expect(asActor("saga_bot", (tx) => appendOne(tx, Streams.emailEvents, { id: "x", type: "SucceededInSendingEmailEvent", payload: {} }))).rejects.toThrow(
      /refused by PostgreSQL: permission denied for table events/,
    );
    await expect(asActor("reader", (tx) => appendOne(tx, Streams.notificationViews, { id: "x", type: "View", payload: {} }))).rejects.toThrow(/permission denied/);
    const { rows } = await t.query("select count(*)::int as n from notification.events where type = 'Forged'");
    expect(rows[0].n).toBe(0);
  });

  it("a consumer reads its stream but cannot write to it, and nobody may change a stream row", async () => {
    await asActor("client", (tx) => appendOne(tx, Streams.notificationClientOperations, op("r-2")));
    const seen = await asActor("notification_bot", (tx) => sql<{ n: number }>`select count(*)::int as n from notification.client_operations`.execute(tx));
    expect(seen.rows[0]!.n).toBeGreaterThan(0);
    await expect(asActor("notification_bot", (tx) => appendOne(tx, Streams.notificationClientOperations, op("r-3")))).rejects.toThrow(/permission denied/);
    for (const actor of ["notification_bot", "client", "operator"]) {
      await expect(asActor(actor, (tx) => sql`update notification.client_operations set type = 'X'`.execute(tx))).rejects.toThrow(/permission denied/);
    }
  });

  it("handling state is written only by the stream's consumers (and the operator)", async () => {
    const { position } = await asActor("client", (tx) => appendOne(tx, Streams.notificationClientOperations, op("r-4")));
    const target = { stream: Streams.notificationClientOperations, position, concern: "notification_bot" };
    await expect(asActor("email_bot", (tx) => claim(tx, target, { actor: "email_bot" }))).rejects.toThrow(/permission denied/);
    const won = await asActor("notification_bot", (tx) => claim(tx, target, { actor: "notification_bot" }));
    expect(won.claimed).toBe(true);
  });
});
