/**
 * Kysely's queries go to PostgreSQL as named prepared statements, parsed once
 * per connection (src/db/prepared.ts): what a session holds is read from
 * pg_prepared_statements on that very session.
 */
import { sql } from "kysely";
import { createDb, createPool, inTransaction, type Db } from "../../src/db/database";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
let db: Db;

beforeAll(async () => {
  t = await createTestDatabase(2);
  // One connection: every query below runs on the same session.
  db = createDb(createPool(t.adminUrl, 1, "prepared-test"));
  await t.query("create table probe (id integer primary key, name text)");
  await t.query("insert into probe values (1, 'one'), (2, 'two')");
});
afterAll(async () => {
  await db.destroy();
  await t.close();
});

const preparedOnSession = async (like: string) =>
  (await sql<{ n: number }>`select count(*)::int as n from pg_prepared_statements where statement like ${like}`.execute(db)).rows[0]!.n;

describe("named prepared statements", () => {
  it("prepares a query with parameters once per connection and reuses it, whatever the values", async () => {
    for (const id of [1, 2, 1, 2, 1, 2, 1]) {
      const { rows } = await sql<{ name: string }>`select name from probe where id = ${id} /* reuse */`.execute(db);
      expect(rows[0]!.name).toBe(id === 1 ? "one" : "two");
    }
    expect(await preparedOnSession("%/* reuse */%")).toBe(1);
  });

  it("leaves a query without parameters unnamed", async () => {
    await sql`select name from probe where id = 1 /* no parameters */`.execute(db);
    expect(await preparedOnSession("%/* no parameters */%")).toBe(0);
  });

  it("after a table changes under a prepared statement, refuses it once, then parses it afresh; outside a transaction and inside", async () => {
    const read = () => sql<Record<string, unknown>>`select * from probe where id = ${1} /* outside */`.execute(db);
    expect(Object.keys((await read()).rows[0]!)).toEqual(["id", "name"]);
    await t.query("alter table probe add column extra text default 'x'");
    await expect(read()).rejects.toMatchObject({ code: "0A000", message: "cached plan must not change result type" });
    expect((await read()).rows[0]).toEqual({ id: 1, name: "one", extra: "x" });

    const inside = (tx: Parameters<Parameters<typeof inTransaction>[2]>[0]) => sql<Record<string, unknown>>`select * from probe where id = ${2} /* inside */`.execute(tx);
    expect(Object.keys((await inTransaction(db, null, inside)).rows[0]!)).toEqual(["id", "name", "extra"]);
    await t.query("alter table probe add column later text default 'y'");
    await expect(inTransaction(db, null, inside)).rejects.toMatchObject({ code: "0A000" });
    expect((await inTransaction(db, null, inside)).rows[0]).toEqual({ id: 2, name: "two", extra: "x", later: "y" });
  });

  it("prepares at most 200 statements per connection; further texts still answer, unnamed", async () => {
    for (let i = 0; i < 520; i++) {
      const { rows } = await sql<{ v: number }>`select ${i}::integer as v ${sql.raw(`/* text ${i} */`)}`.execute(db);
      expect(rows[0]!.v).toBe(i);
    }
    // The texts of the tests above count too (and the two renamed): fewer than 200 of these were prepared, the first ones.
    const prepared = await preparedOnSession("%/* text %");
    expect(prepared).toBeGreaterThan(180);
    expect(prepared).toBeLessThan(200);
    expect(await preparedOnSession("%/* text 0 */%")).toBe(1);
    expect(await preparedOnSession("%/* text 519 */%")).toBe(0);
  });
});
