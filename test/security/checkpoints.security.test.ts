/**
 * Catch-up bots (the projection, the webhook dispatcher) are granted UPDATE
 * on tidings.checkpoints to move their cursors: each may move its own row
 * only (row-level security), so one cannot make another skip or repeat
 * records.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase(5);
});
afterAll(async () => {
  await t.close();
});

/** How many checkpoint rows this actor's update reached (row-level security hides the others: 0, no error). */
const move = (actor: string, checkpoint: string) =>
  inTransaction(t.db, actor, async (tx) => {
    const { rows } = await sql<{ name: string }>`update tidings.checkpoints set cursors = cursors where name = ${checkpoint} returning name`.execute(tx);
    return rows.length;
  });

describe("tidings.checkpoints", () => {
  it("lets each catch-up bot move its own checkpoint", async () => {
    expect(await move("projection_bot", "notification_views")).toBe(1);
    expect(await move("webhook_bot", "webhook_dispatch")).toBe(1);
  });

  it("refuses a catch-up bot another's checkpoint", async () => {
    expect(await move("webhook_bot", "notification_views")).toBe(0);
    expect(await move("projection_bot", "webhook_dispatch")).toBe(0);
  });

  it("refuses every other actor any checkpoint, and nobody may re-assign one to themselves", async () => {
    for (const actor of ["reader", "email_bot", "operator", "auditor"]) {
      await expect(move(actor, "notification_views")).rejects.toThrow(/permission denied/);
    }
    await expect(
      inTransaction(t.db, "webhook_bot", (tx) => sql`update tidings.checkpoints set actor = 'webhook_bot' where name = 'notification_views'`.execute(tx)),
    ).resolves.toMatchObject({ rows: [] });
    await expect(
      inTransaction(t.db, "webhook_bot", (tx) => sql`update tidings.checkpoints set actor = 'projection_bot' where name = 'webhook_dispatch'`.execute(tx)),
    ).rejects.toThrow(/row-level security/);
  });

  it("still lets the readers of lag read every checkpoint", async () => {
    const rows = await inTransaction(t.db, "projection_bot", (tx) => sql<{ name: string }>`select name from tidings.checkpoints order by name`.execute(tx));
    expect(rows.rows.map((r) => r.name)).toEqual(expect.arrayContaining(["notification_views", "webhook_dispatch"]));
  });
});
