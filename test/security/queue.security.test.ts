/**
 * graphile-worker's queue is the service's to work (through a row-level
 * policy of its own, src/db/migrate.ts) and the outbox's to fill (security
 * definer triggers): a SQL client, an auditor and every actor role are
 * refused it, so none can read other notifications' jobs, forge a job or
 * delete one to stall a record.
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

const ATTACKS = [
  "select count(*) from graphile_worker.jobs",
  "select count(*) from graphile_worker._private_jobs",
  'select graphile_worker.add_job(\'email.operations:email_bot\', \'{"stream":"email.operations","position":1,"id":"x"}\')',
  "delete from graphile_worker._private_jobs",
];

describe("graphile-worker's queue", () => {
  it("refuses a SQL login granted tidings_client, and an auditor", async () => {
    for (const grants of [["tidings_client"], ["tidings_auditor"]]) {
      const login = await t.createLogin({ prefix: "queue", grants });
      for (const attack of ATTACKS) await expect(login.pool.query(attack)).rejects.toThrow(/permission denied/);
    }
  });

  it("refuses every actor role the service acts as", async () => {
    const { rows } = await t.query<{ name: string }>("select name from tidings.actors order by name");
    expect(rows.length).toBeGreaterThan(5);
    for (const { name } of rows) {
      for (const attack of ATTACKS) {
        await expect(inTransaction(t.db, name, (tx) => sql.raw(attack).execute(tx))).rejects.toThrow(/permission denied/);
      }
    }
  });

  it("is the service login's own to read (what /metrics and the lease do)", async () => {
    await expect(inTransaction(t.db, null, (tx) => sql`select count(*) from graphile_worker.jobs`.execute(tx))).resolves.toBeDefined();
  });
});
