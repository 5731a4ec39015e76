/**
 * One way to act as a role: `inTransaction(db, actor, fn)` opens a
 * transaction acting as the actor, `asActor(tx, actor, fn)` switches inside
 * one and switches back. A transaction (Tx) is a type of its own that only
 * inTransaction makes: the pool cannot be passed where one is needed, nor a
 * transaction where the pool is (tsc checks the @ts-expect-error lines
 * below; the test fails to compile otherwise).
 */
import { sql } from "kysely";
import { asActor, inTransaction, type Db, type Tx } from "../../src/db/database";
import { putEntity } from "../../src/entities/entity.repository";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t.close();
});

const currentUser = async (tx: Tx) => (await sql<{ u: string }>`select current_user as u`.execute(tx)).rows[0]!.u;

/** Only compiled, never run: what the brand refuses. */
export function poolIsNotATransaction(db: Db): Promise<unknown> {
  // @ts-expect-error a pool is not an open transaction
  return asActor(db, "reader", async () => undefined);
}

/** Only compiled, never run: nor is a transaction a pool (putEntity's own BEGIN and COMMIT would end the caller's transaction). */
export function transactionIsNotAPool(tx: Tx): Promise<unknown> {
  // @ts-expect-error a transaction is not a pool
  return putEntity(tx, "ada", { kind: "user", name: "Ada", email: null, slack: null, preferences: { channels: [], optedOut: [], delivery: "all" } }, "test");
}

describe("acting as a role", () => {
  it("inTransaction acts as the actor; asActor switches inside it and back", async () => {
    const seen = await inTransaction(t.db, "notification_bot", async (tx) => {
      const before = await currentUser(tx);
      const inside = await asActor(tx, "client", () => currentUser(tx));
      return { before, inside, after: await currentUser(tx) };
    });
    expect(seen).toEqual({ before: "tidings_notification_bot", inside: "tidings_client", after: "tidings_notification_bot" });
  });

  it("without an actor, the transaction is the service's own, and asActor comes back to it", async () => {
    const service = (await sql<{ u: string }>`select current_user as u`.execute(t.db)).rows[0]!.u;
    const seen = await inTransaction(t.db, null, async (tx) => ({ inside: await asActor(tx, "reader", () => currentUser(tx)), after: await currentUser(tx) }));
    expect(seen).toEqual({ inside: "tidings_reader", after: service });
  });

  it("refuses an actor name that is not one", async () => {
    await expect(inTransaction(t.db, null, (tx) => asActor(tx, 'client"; drop table x; --', async () => 1))).rejects.toThrow(/invalid actor name/);
  });
});
