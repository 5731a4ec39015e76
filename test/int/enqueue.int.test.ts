import { inTransaction } from "../../src/db/database";
import { sql } from "kysely";
import pg from "pg";
import { enqueueNotificationInTransaction } from "../../src/notification/enqueue";
import { Streams } from "../../src/notification/streams";
import { findRecords, getLatestById } from "../../src/streams/read";
import type { TestLogin } from "../helpers/db";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

let app: Tidings;
/** The calling service: a login of its own, granted tidings_client (README), with a business table. */
let shop: TestLogin;
beforeAll(async () => {
  app = await startTidings();
  await createEntity(app.t, "shop", person({ email: "shop@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
  shop = await app.t.createLogin({ prefix: "shop", grants: ["tidings_client"] });
  // A business table of the calling service, in the same database.
  await app.t.query("create table public.orders (id serial primary key, item text not null)");
  await app.t.query(
    `grant usage on schema public to ${shop.name}; grant insert, select on public.orders to ${shop.name}; grant usage on sequence public.orders_id_seq to ${shop.name}`,
  );
});
afterAll(async () => {
  await app.stop();
});

async function clientOps(): Promise<number> {
  return (await findRecords(app.t.adminDb, Streams.notificationClientOperations)).length;
}

describe("enqueue inside the caller's own transaction, in SQL", () => {
  async function withClient<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await shop.pool.connect();
    try {
      return await fn(c);
    } finally {
      c.release();
    }
  }

  it("rolled back: no notification, no email", async () => {
    const before = await clientOps();
    await withClient(async (c) => {
      await c.query("begin");
      await c.query("insert into public.orders (item) values ('lost')");
      const { rows } = await c.query("select notification.send_notification_to_entity('shop', 'Order lost', 'never sent') as id");
      expect(rows[0].id).toMatch(/^[0-9a-f-]{36}$/);
      await c.query("rollback");
    });
    await new Promise((r) => setTimeout(r, 500));
    expect(await clientOps()).toBe(before);
    expect(app.smtp.messages.filter((m) => m.subject === "Order lost")).toHaveLength(0);
    expect((await app.t.query("select count(*)::int as n from graphile_worker.jobs")).rows[0].n).toBe(0);
  });

  it("committed: delivered, with tags and channels as given", async () => {
    const id = await withClient(async (c) => {
      await c.query("begin");
      await c.query("insert into public.orders (item) values ('book')");
      const { rows } = await c.query(
        `select notification.send_notification_to_entity('shop', 'Order placed', 'Thanks for your order.', channels => array['email'], tags => '{"order":"1"}') as id`,
      );
      await c.query("commit");
      return rows[0].id as string;
    });
    const outcome = await waitForOutcome(app.t, id);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    expect(app.smtp.messages.find((m) => m.subject === "Order placed")?.text).toContain("Thanks for your order.");
    const op = await getLatestById(app.t.adminDb, Streams.notificationClientOperations, id);
    expect(op!.tags).toEqual({ order: "1" });
    // The service's own login wrote it (it inherits tidings_client).
    expect(op!.recordedBy).toBe(shop.name);
  });

  it("an idempotency key yields one notification per login and key, the same from SQL and from TypeScript", async () => {
    const first = (await shop.pool.query("select notification.send_notification_to_entity('shop', 's', 't', idempotency_key => 'order-42') as id")).rows[0].id;
    const again = (await shop.pool.query("select notification.send_notification_to_entity('shop', 's', 't', idempotency_key => 'order-42') as id")).rows[0].id;
    // The key is this login's own, and keeps the (random) tracking id it was first given.
    const { rows } = await app.t.query("select tracking_id from api.idempotency_keys where scope = $1 and key = 'order-42'", [`sql:${shop.name}`]);
    expect(rows).toEqual([{ tracking_id: first }]);
    expect(again).toBe(first);
    expect(await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [first] })).toHaveLength(1);
  });

  it.each([
    ["select notification.send_notification_to_entity('', 's', 't')", /entity_id: must be/],
    ["select notification.send_notification_to_entity('a', '   ', 't')", /subject: must be 1-998 characters/],
    ["select notification.send_notification_to_entity('a', 's', '')", /text_body: must be/],
    ["select notification.send_notification_to_entity('a', 's', 't', channels => array['fax'])", /channels: must be/],
    [`select notification.send_notification_to_entity('a', 's', 't', tags => '{"x": 1}')`, /tags: tag "x"/],
    [`select notification.send_notification_to_entity('a', 's', 't', tags => '[1]')`, /tags: must be a JSON object/],
  ])("refuses bad input with a message naming it: %s", async (query, message) => {
    const before = await clientOps();
    await expect(shop.pool.query(query)).rejects.toThrow(message);
    expect(await clientOps()).toBe(before);
  });

  it("only clients may call it", async () => {
    const reader = await app.t.createLogin({ prefix: "reader", grants: ["tidings_reader"] });
    await expect(reader.pool.query("select notification.send_notification_to_entity('shop', 's', 't')")).rejects.toThrow(
      /permission denied for function send_notification_to_entity/,
    );
  });
});

describe("enqueue inside the caller's own transaction, from TypeScript", () => {
  it("rolled back: nothing; committed: delivered", async () => {
    const before = await clientOps();
    await expect(
      inTransaction(shop.db, null, async (tx) => {
        await sql`insert into public.orders (item) values ('ts-lost')`.execute(tx);
        await enqueueNotificationInTransaction(tx, { entityId: "shop", subject: "TS lost", text: "never" });
        throw new Error("the caller's business rule failed");
      }),
    ).rejects.toThrow("business rule");
    expect(await clientOps()).toBe(before);

    const { trackingId } = await inTransaction(shop.db, null, async (tx) => {
      await sql`insert into public.orders (item) values ('ts-book')`.execute(tx);
      const enqueued = await enqueueNotificationInTransaction(tx, { entityId: "shop", subject: "TS placed", text: "yes" });
      // The caller's own role is back after the enqueue.
      const { rows } = await sql<{ u: string }>`select current_user as u`.execute(tx);
      expect(rows[0]!.u).toBe(shop.name);
      return enqueued;
    });
    expect((await waitForOutcome(app.t, trackingId)).type).toBe("SentOnAllPreparedChannelsEvent");
    expect(app.smtp.messages.some((m) => m.subject === "TS placed")).toBe(true);
  });
});
