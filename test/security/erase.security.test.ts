/**
 * The erasure is the one door through the append-only guard
 * (migrations/0004_erasure.sql): only the operator may open it
 * (entity.erase_entity), it opens for that function's own statements only,
 * only to rewrite rows (never remove them), and what it erased stays
 * erased: no re-drive, no resend. Each promise attacked by whoever must be
 * refused, down to a superuser setting the guard's flag by hand.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase(6);
});
afterAll(async () => {
  await t?.close();
});

const entityRecord = (id: string, name: string) => ({
  id,
  type: "EntityChangedEvent",
  payload: {
    entity: { id, kind: "user", name, email: `${id}@example.org`, slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } },
    changed: ["kind", "name", "email", "slack", "preferences"],
    changedBy: "test",
  },
});

async function createEntity(id: string, name: string): Promise<void> {
  await inTransaction(t.db, "entity_admin", (tx) => sql`select tidings.append('entity.events', ${JSON.stringify([entityRecord(id, name)])}::jsonb)`.execute(tx));
}

/** A notification to `entity` whose client operation failed for good (Failed, waiting for an operator): settled, so it may be erased. */
async function failedNotification(entity: string): Promise<{ id: string; position: number }> {
  const id = (
    await inTransaction(t.db, "client", (tx) =>
      sql<{ id: string }>`select notification.send_notification_to_entity(${entity}, 'A private subject', 'A private body') as id`.execute(tx),
    )
  ).rows[0]!.id;
  const { rows } = await t.query<{ position: number }>("select position from notification.client_operations where id = $1", [id]);
  const position = rows[0]!.position;
  await inTransaction(t.db, "notification_bot", async (tx) => {
    await sql`insert into notification.client_operations__handling (position, concern, status, attempts, last_action, last_actor, last_reason)
              values (${position}, 'notification_bot', 'Running', 1, 'claim', 'notification_bot', 'claimed')`.execute(tx);
    await sql`update notification.client_operations__handling set status = 'Failed', last_action = 'fail', last_reason = 'gave up', last_error = 'boom'
              where position = ${position} and concern = 'notification_bot'`.execute(tx);
  });
  return { id, position };
}

const erase = (actor: string | null, entity: string, execute = false) =>
  inTransaction(t.db, actor, (tx) => sql`select entity.erase_entity(${entity}, 'mallory', 'because', ${execute})`.execute(tx));

describe("who may erase", () => {
  beforeAll(async () => {
    await createEntity("target", "Tara Target");
  });

  it("the operator may", async () => {
    await expect(erase("operator", "target")).resolves.toBeDefined();
  });

  it("no other actor, nor the service login by itself, nor a SQL client or an auditor", async () => {
    for (const actor of [
      "client",
      "notification_bot",
      "saga_bot",
      "reaction_bot",
      "internal_operation_bot",
      "projection_bot",
      "email_bot",
      "slack_bot",
      "entity_admin",
      "reader",
      "auditor",
      null,
    ]) {
      await expect(erase(actor, "target", true)).rejects.toThrow(/permission denied/);
    }
    for (const grants of [["tidings_client"], ["tidings_auditor"]]) {
      const login = await t.createLogin({ prefix: "eraser", grants });
      await expect(login.pool.query("select entity.erase_entity('target', 'mallory', 'because', true)")).rejects.toThrow(/permission denied/);
    }
    const { rows } = await t.query("select payload->'entity'->>'name' as name from entity.events where id = 'target'");
    expect(rows).toEqual([{ name: "Tara Target" }]);
  });

  it("nobody but the owner reaches the erasure window's parts", async () => {
    for (const actor of ["operator", "client", "reader", null]) {
      await expect(inTransaction(t.db, actor, (tx) => sql`select tidings.begin_erasure()`.execute(tx))).rejects.toThrow(/permission denied/);
      await expect(inTransaction(t.db, actor, (tx) => sql`insert into tidings.erasure_permits (tx_id) values (pg_current_xact_id())`.execute(tx))).rejects.toThrow(
        /permission denied/,
      );
      await expect(inTransaction(t.db, actor, (tx) => sql`select * from tidings.erasure_permits`.execute(tx))).rejects.toThrow(/permission denied/);
      await expect(inTransaction(t.db, actor, (tx) => sql`select entity.redact('{}'::jsonb, '{}'::text[])`.execute(tx))).rejects.toThrow(/permission denied/);
    }
  });

  it("an entity id that could become SQL is refused before anything runs", async () => {
    await expect(erase("operator", "x'); drop table entity.events; --")).rejects.toThrow(/entity: must be 1-200 characters/);
  });
});

describe("the guard's flag cannot be forged", () => {
  beforeAll(async () => {
    await createEntity("forge", "Fiona Forge");
  });

  it("setting it by hand lets no UPDATE through, not even a superuser's", async () => {
    for (const statement of [
      "update entity.events set payload = '{}' where id = 'forge'",
      "update entity.events__handling_history set reason = 'x'",
      "update tidings.erased_records set id = 'x'",
      "update tidings.checkpoint_failures set error = 'x'",
    ]) {
      await expect(
        t.adminDb.transaction().execute(async (tx) => {
          await sql`select set_config('tidings.erasure', 'on', true)`.execute(tx);
          await sql.raw(statement).execute(tx);
        }),
      ).rejects.toThrow(/append-only: UPDATE is not allowed/);
    }
  });

  it("the window closes when the erasure returns: a later UPDATE in the same transaction is refused", async () => {
    await expect(
      t.adminDb.transaction().execute(async (tx) => {
        await sql`set local role tidings_operator`.execute(tx);
        await sql`select entity.erase_entity('forge', 'mallory', 'piggyback', true)`.execute(tx);
        await sql`reset role`.execute(tx);
        await sql`select set_config('tidings.erasure', 'on', true)`.execute(tx);
        await sql`update entity.events set payload = '{"entity": {"name": "Fiona Forge"}}' where id = 'forge'`.execute(tx);
      }),
    ).rejects.toThrow(/append-only: UPDATE is not allowed/);
  });

  it("the operator holds no UPDATE of a stream, in the window or out of it", async () => {
    await expect(inTransaction(t.db, "operator", (tx) => sql`update entity.events set payload = '{}' where id = 'forge'`.execute(tx))).rejects.toThrow(/permission denied/);
  });

  it("the window only ever rewrites: with a permit forged by a superuser, DELETE and TRUNCATE are still refused", async () => {
    for (const statement of ["delete from entity.events where id = 'forge'", "truncate entity.events", "delete from notification.client_operations__handling"]) {
      await expect(
        t.adminDb.transaction().execute(async (tx) => {
          await sql`insert into tidings.erasure_permits (tx_id) values (pg_current_xact_id())`.execute(tx);
          await sql`select set_config('tidings.erasure', 'on', true)`.execute(tx);
          await sql.raw(statement).execute(tx);
        }),
      ).rejects.toThrow(/is append-only: (DELETE|TRUNCATE) is not allowed/);
    }
  });
});

describe("the erasure record", () => {
  beforeAll(async () => {
    await createEntity("recorded", "Rita Recorded");
    await erase("operator", "recorded", true);
  });

  it("is written only by the erasure: no actor appends to entity.erasures", async () => {
    const forged = JSON.stringify([{ id: "recorded", type: "EntityErasedEvent", payload: {} }]);
    for (const actor of ["operator", "entity_admin", "client", "reader"]) {
      await expect(inTransaction(t.db, actor, (tx) => sql`select tidings.append('entity.erasures', ${forged}::jsonb)`.execute(tx))).rejects.toThrow(/permission denied/);
    }
  });

  it("is append-only, and so is the list of erased records", async () => {
    expect((await t.query("select count(*)::int as n from entity.erasures where id = 'recorded'")).rows[0].n).toBe(1);
    for (const statement of ["update entity.erasures set payload = '{}'", "delete from entity.erasures", "delete from tidings.erased_records", "truncate tidings.erased_records"]) {
      await expect(t.query(statement)).rejects.toThrow(/append-only/);
    }
  });
});

describe("what was erased stays erased", () => {
  let erased: { id: string; position: number };
  beforeAll(async () => {
    await createEntity("gone", "Gus Gone");
    erased = await failedNotification("gone");
    await erase("operator", "gone", true);
  });

  const operatorSets = (action: string, status: string) =>
    inTransaction(t.db, "operator", (tx) =>
      sql`update notification.client_operations__handling set status = ${status}::tidings.handling_status, last_action = ${action}, last_actor = 'mallory', last_reason = 'again'
          where position = ${erased.position} and concern = 'notification_bot'`.execute(tx),
    );

  it("an operator's re-drive in plain SQL is refused, with the reason", async () => {
    await expect(operatorSets("reset_failed", "AvailableAfterFailure")).rejects.toThrow(
      new RegExp(
        `record ${erased.position} of notification.client_operations belongs to notification ${erased.id}, whose personal data was erased at .*: it cannot be re-driven or resent`,
      ),
    );
  });

  it("a resend request is refused where it is written", async () => {
    const resend = JSON.stringify([
      {
        id: erased.id,
        type: "ResendNotificationOp",
        payload: { requestedBy: "mallory", reason: "again", previous: [{ channel: "email", operationId: "x", stream: "email.operations", position: 1, destination: "a@b.c" }] },
      },
    ]);
    await expect(inTransaction(t.db, "operator", (tx) => sql`select tidings.append('notification.internal_operations', ${resend}::jsonb)`.execute(tx))).rejects.toThrow(
      new RegExp(`notification ${erased.id} cannot be resent: its personal data was erased`),
    );
  });

  it("archiving the failure is still allowed (the audit may close it)", async () => {
    await expect(operatorSets("archive_failure", "ArchivedAfterFailure")).resolves.toBeDefined();
    const { rows } = await t.query("select status, last_error from notification.client_operations__handling where position = $1", [erased.position]);
    expect(rows).toEqual([{ status: "ArchivedAfterFailure", last_error: "boom" }]);
  });
});
