/**
 * Issue 9.1: a producer supplies only a record's content (id, type, payload,
 * tags, caused_by_*). position, recorded_at, recorded_by and tx_id are the
 * database's own, and a type the stream does not declare is refused, whoever
 * writes it. Every producer of every stream attacks.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { enqueueNotification } from "../../src/notification/enqueue";
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { createEntity } from "../helpers/tidings";

let t: TestDatabase;
let producers: Array<{ stream: string; actor: string; type: string }>;

beforeAll(async () => {
  t = await createTestDatabase(10);
  // Notifications are for entities that exist: enqueue refuses any other.
  await createEntity(t, "ada");
  const { rows } = await t.query<{ stream: string; actor: string; type: string }>(`
    select p.stream, p.actor,
           -- The webhook bot appends to webhook.endpoints only to disable one (migrations/0008_feature_gaps.sql).
           case when p.stream = 'webhook.endpoints' and p.actor = 'webhook_bot' then 'WebhookEndpointDisabledEvent' else s.record_types[1] end as type
    from tidings.stream_producers p join tidings.streams s on s.name = p.stream
    order by p.stream, p.actor`);
  producers = rows;
});
afterAll(async () => {
  await t.close();
});

const count = async (stream: string, where = "true") => (await t.query(`select count(*)::int as n from ${stream} where ${where}`)).rows[0].n as number;

describe("engine columns belong to the database", () => {
  it("the registry has producers to attack, and every stream declares its record types", async () => {
    expect(producers.length).toBeGreaterThanOrEqual(15);
    const { rows } = await t.query("select name from tidings.streams where record_types is null");
    expect(rows).toEqual([]);
  });

  const attacks: Array<[string, (stream: string, type: string) => string]> = [
    ["position (overriding system value)", (s, ty) => `insert into ${s} (position, id, type, payload) overriding system value values (5, 'squat-5', '${ty}', '{}')`],
    ["recorded_at", (s, ty) => `insert into ${s} (id, type, payload, recorded_at) values ('forged-at', '${ty}', '{}', '2001-01-01')`],
    ["recorded_by", (s, ty) => `insert into ${s} (id, type, payload, recorded_by) values ('forged-by', '${ty}', '{}', 'tidings_notification_bot')`],
    ["tx_id", (s, ty) => `insert into ${s} (id, type, payload, tx_id) values ('forged-tx', '${ty}', '{}', '1')`],
  ];

  it.each(attacks)("every producer writing %s is refused by PostgreSQL, and nothing is stored", async (_column, statement) => {
    for (const { stream, actor, type } of producers) {
      const before = await count(stream);
      await expect(inTransaction(t.db, actor, (tx) => sql.raw(statement(stream, type)).execute(tx))).rejects.toThrow(/permission denied for table/);
      expect(await count(stream)).toBe(before);
    }
  });

  it("every producer writing a type its stream does not declare is refused", async () => {
    for (const { stream, actor } of producers) {
      await expect(inTransaction(t.db, actor, (tx) => sql.raw(`insert into ${stream} (id, type, payload) values ('x', 'Squat', '{}')`).execute(tx))).rejects.toThrow(
        /violates check constraint "declared_type"/,
      );
    }
  });

  it("a producer's content-only insert is stamped with the database's own position, time, writer and transaction", async () => {
    for (const { stream, actor, type } of producers) {
      const id = `ok-${actor}`;
      const { txid } = await inTransaction(t.db, actor, async (tx) => {
        await sql.raw(`insert into ${stream} (id, type, payload) values ('${id}', '${type}', '{}')`).execute(tx);
        return (await sql<{ txid: string }>`select pg_current_xact_id()::text as txid`.execute(tx)).rows[0]!;
      });
      const { rows } = await t.query(`select recorded_by, tx_id::text as tx, recorded_at > now() - interval '1 minute' as recent from ${stream} where id = $1`, [id]);
      expect(rows).toEqual([{ recorded_by: `tidings_${actor}`, tx: txid, recent: true }]);
    }
  });

  it("even the owner (a superuser here) inserting engine columns gets the database's own writer, time and transaction", async () => {
    const { rows } = await t.query(
      `insert into entity.events (id, type, payload, recorded_at, recorded_by, tx_id)
       values ('owner-forged', 'EntityRemovedEvent', '{}', '2001-01-01', 'tidings_notification_bot', '1')
       returning recorded_by, recorded_at > now() - interval '1 minute' as recent, tx_id = pg_current_xact_id() as own_tx`,
    );
    expect(rows).toEqual([{ recorded_by: "postgres", recent: true, own_tx: true }]);
    // A stream partitioned by recorded_at (migration 0005) routes the row by the time given, before
    // the stamp: a forged time outside every partition is refused outright.
    await expect(
      t.query(`insert into notification.events (id, type, payload, recorded_at) values ('owner-forged', 'SendNotificationRequestedEvent', '{}', '2001-01-01')`),
    ).rejects.toThrow(/no partition of relation "events" found for row/);
  });

  it("a SQL login granted tidings_client cannot squat a position or forge a writer, and enqueue keeps working", async () => {
    const attacker = await t.createLogin({ prefix: "squatter", grants: ["tidings_client"] });
    // The attack of the issue, as written there.
    await expect(
      attacker.pool.query("insert into notification.client_operations (position,id,type,payload) overriding system value values (5,'squat-5','Squat','{}')"),
    ).rejects.toThrow(/permission denied for table client_operations/);
    await expect(
      attacker.pool.query(
        "insert into notification.client_operations (id,type,payload,recorded_by,recorded_at) values ('forged','SendNotificationToEntityOp','{}','tidings_notification_bot','2001-01-01')",
      ),
    ).rejects.toThrow(/permission denied for table client_operations/);
    expect(await count("notification.client_operations", "id in ('squat-5', 'forged')")).toBe(0);
    // Positions come from the identity only, so enqueue is not blocked.
    for (let i = 0; i < 6; i++) {
      const enqueued = await enqueueNotification(t.db, { entityId: "ada", subject: `after the squat ${i}`, text: "t" });
      expect(enqueued.created).toBe(true);
    }
  });
});
