/**
 * template.versions: only the template admin appends a version; nobody,
 * the admin included, changes or removes one; a second version with the
 * same number is refused by the database whoever writes it. The API reads
 * as the reader actor, which may not write.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { appendOne } from "../../src/streams/append";
import { putTemplate } from "../../src/templates/template.repository";
import { TemplateStreams } from "../../src/templates/template.schemas";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase(4);
  await putTemplate(t.db, "welcome", { email: { subject: "Hi", text: "Hello" } }, "test");
});
afterAll(async () => {
  await t?.close();
});

const version = (n: number) => ({
  id: "welcome",
  type: "TemplateVersionRecorded",
  payload: { key: "welcome", version: n, template: { email: { subject: "Forged", text: "x" } }, recordedBy: "attacker" },
});

describe("template.versions", () => {
  it("the template admin appends; a client, the reader, the entity admin and the notification bot are refused", async () => {
    await expect(inTransaction(t.db, "template_admin", (tx) => appendOne(tx, TemplateStreams.versions, version(2)))).resolves.toMatchObject({ written: true });
    for (const actor of ["client", "reader", "entity_admin", "notification_bot"]) {
      await expect(inTransaction(t.db, actor, (tx) => appendOne(tx, TemplateStreams.versions, version(3)))).rejects.toThrow(/permission denied/);
    }
    const login = await t.createLogin({ prefix: "tpl", grants: ["tidings_client"] });
    await expect(login.pool.query("insert into template.versions (id, type, payload) values ('welcome', 'TemplateVersionRecorded', '{}')")).rejects.toThrow(/permission denied/);
  });

  it("no one changes or removes a version, the admin included", async () => {
    for (const attack of ["update template.versions set payload = '{}'", "delete from template.versions"]) {
      await expect(inTransaction(t.db, "template_admin", (tx) => sql.raw(attack).execute(tx))).rejects.toThrow(/permission denied|append-only/);
      await expect(t.query(attack)).rejects.toThrow(/append-only|TD001/);
    }
    const { rows } = await t.query<{ n: number }>("select count(*)::int as n from template.versions where id = 'welcome'");
    expect(rows[0]!.n).toBe(2);
  });

  it("a second version with a number already taken is refused by the database", async () => {
    await expect(inTransaction(t.db, "template_admin", (tx) => appendOne(tx, TemplateStreams.versions, version(1)))).rejects.toThrow(
      /template_versions_one_per_number|duplicate key/,
    );
  });

  it("the reader reads versions but cannot write them", async () => {
    await expect(inTransaction(t.db, "reader", (tx) => sql`select count(*) from template.versions`.execute(tx))).resolves.toBeDefined();
    await expect(inTransaction(t.db, "client", (tx) => sql`select count(*) from template.versions`.execute(tx))).rejects.toThrow(/permission denied/);
  });
});

describe("the scheduler (cancels scheduled notifications)", () => {
  it("appends notification events only: no client operation, no channel operation; a client cannot append events", async () => {
    const forged = { id: "n-1", type: "NotificationCancelledEvent", payload: { cancelledBy: "x", sendAt: null } };
    await expect(inTransaction(t.db, "client", (tx) => appendOne(tx, "notification.events", forged))).rejects.toThrow(/permission denied/);
    await expect(
      inTransaction(t.db, "scheduler", (tx) => appendOne(tx, "notification.client_operations", { id: "n-1", type: "SendNotificationToEntityOp", payload: {} })),
    ).rejects.toThrow(/permission denied/);
    await expect(inTransaction(t.db, "scheduler", (tx) => appendOne(tx, "email.operations", { id: "n-1", type: "SendEmailOp", payload: {} }))).rejects.toThrow(/permission denied/);
    await expect(inTransaction(t.db, "scheduler", (tx) => sql`update notification.events set payload = '{}'`.execute(tx))).rejects.toThrow(/permission denied|append-only/);
  });
});

describe("the SQL enqueue functions of migrations/0008_feature_gaps.sql", () => {
  const calls = [
    "select notification.send_notification_to_entity('ada', 's', 't', category => 'security', send_at => now() + interval '1 day')",
    "select * from notification.send_notification_to_entities(array['ada'], 's', 't', category => 'security', send_at => now() + interval '1 day')",
  ];
  beforeAll(async () => {
    await t.query(
      `insert into entity.events (id, type, payload) values ('ada', 'EntityChangedEvent', '{"entity": {"id": "ada", "kind": "user", "name": "Ada", "email": "ada@example.com", "slack": null, "preferences": {"channels": ["email"], "optedOut": [], "delivery": "all"}}}')`,
    );
  });

  it("are the client's alone: every other actor and a login without tidings_client are refused", async () => {
    for (const actor of ["reader", "auditor", "operator", "notification_bot", "webhook_bot", "template_admin", "scheduler"]) {
      for (const call of calls) await expect(inTransaction(t.db, actor, (tx) => sql.raw(call).execute(tx))).rejects.toThrow(/permission denied for (function|schema)/);
    }
    const nobody = await t.createLogin({ prefix: "nocat", grants: [] });
    const client = await t.createLogin({ prefix: "cat", grants: ["tidings_client"] });
    try {
      for (const call of calls) await expect(nobody.pool.query(call)).rejects.toThrow(/permission denied for (function|schema)/);
      for (const call of calls) await expect(client.pool.query(call)).resolves.toMatchObject({ rowCount: 1 });
      // The webhook endpoints' guard is a trigger's, callable by nobody.
      for (const role of [nobody.name, "tidings_webhook_bot", "tidings_client", "tidings_reader"]) {
        const { rows } = await t.query("select has_function_privilege($1, 'webhook.tg_guard_endpoint_writers()', 'execute') as may", [role]);
        expect({ role, may: rows[0].may }).toEqual({ role, may: false });
      }
    } finally {
      await Promise.all([nobody.pool.end(), client.pool.end()]);
    }
  });
});
