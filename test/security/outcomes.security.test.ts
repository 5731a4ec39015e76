/**
 * The one answer to "did this send succeed?" (notification.operation_outcomes)
 * and the channel list it is built from (notification.channels) are read by
 * the saga and the projection only, and changed by migrations only: a SQL
 * caller, another bot and the service login itself are refused.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase(4);
});
afterAll(async () => {
  await t?.close();
});

const read = (actor: string | null, relation: string) => inTransaction(t.db, actor, (tx) => sql`select count(*) from ${sql.table(relation)}`.execute(tx));

describe("notification.operation_outcomes and notification.channels", () => {
  it("the saga and the projection read the outcomes", async () => {
    await expect(read("saga_bot", "notification.operation_outcomes")).resolves.toBeDefined();
    await expect(read("projection_bot", "notification.operation_outcomes")).resolves.toBeDefined();
  });

  it("no other actor, nor the service login by itself, reads them or the channel list", async () => {
    for (const actor of ["client", "email_bot", "slack_bot", "notification_bot", "reader", null]) {
      await expect(read(actor, "notification.operation_outcomes")).rejects.toThrow(/permission denied/);
      await expect(read(actor, "notification.channels")).rejects.toThrow(/permission denied/);
    }
  });

  it("a SQL login granted tidings_client can neither read nor change the channel list", async () => {
    const login = await t.createLogin({ prefix: "chan", grants: ["tidings_client"] });
    await expect(login.pool.query("select * from notification.operation_outcomes")).rejects.toThrow(/permission denied/);
    await expect(login.pool.query("insert into notification.channels values ('fax', 'email.operations', 'email.events', 'X', 'Y')")).rejects.toThrow(/permission denied/);
    await expect(login.pool.query("update notification.channels set failed_type = 'SucceededInSendingEmailEvent'")).rejects.toThrow(/permission denied/);
    await expect(login.pool.query("select notification.refresh_operation_outcomes()")).rejects.toThrow(/permission denied/);
  });

  it("the saga bot may read the outcomes but not change what they are built from", async () => {
    await expect(inTransaction(t.db, "saga_bot", (tx) => sql`update notification.channels set failed_type = 'SucceededInSendingEmailEvent'`.execute(tx))).rejects.toThrow(
      /permission denied/,
    );
  });
});
