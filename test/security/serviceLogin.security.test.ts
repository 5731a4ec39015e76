/**
 * Issue 9.2: the running service logs in as a role that is neither a
 * superuser nor the owner of anything, so with the service's own login (and
 * as each actor it may act as) every way of changing or removing a stream
 * row is refused; and the service refuses to start as anything more.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { sql } from "kysely";
import { createPool, inTransaction } from "../../src/db/database";
import { PrivilegedServiceLoginError, assertServiceLogin } from "../../src/db/roles";
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { createEntity } from "../helpers/tidings";

let t: TestDatabase;
let streams: string[];
let actors: string[];

beforeAll(async () => {
  t = await createTestDatabase(10);
  // Notifications are for entities that exist: enqueue refuses any other.
  await createEntity(t, "ada");
  streams = (await t.query("select name from tidings.streams order by name")).rows.map((r) => r.name);
  actors = (await t.query("select name from tidings.actors order by name")).rows.map((r) => r.name);
  // A row in every stream to aim at.
  for (const s of streams) {
    await t.query(`insert into ${s} (id, type, payload) select 'target', record_types[1], '{}' from tidings.streams where name = $1`, [s]);
  }
});
afterAll(async () => {
  await t.close();
});

/** Run statements in one session of the service's own login, rolled back whatever happens. */
async function asService(statements: string[]): Promise<void> {
  const client = await t.pool.connect();
  try {
    await client.query("begin");
    for (const s of statements) await client.query(s);
  } finally {
    await client.query("rollback").catch(() => {});
    client.release();
  }
}

const rowsIn = async (stream: string) => (await t.query(`select count(*)::int as n from ${stream} where id = 'target'`)).rows[0].n;

describe("the service's own login", () => {
  it("is neither a superuser nor a member of the owner role, and owns nothing", async () => {
    const { rows } = await t.pool.query(`
      select r.rolsuper, pg_has_role(current_user, 'tidings_owner', 'MEMBER') as owner,
             (select count(*)::int from pg_class where relowner = r.oid) as owns
      from pg_roles r where rolname = current_user`);
    expect(rows[0]).toEqual({ rolsuper: false, owner: false, owns: 0 });
    await expect(assertServiceLogin(t.pool)).resolves.toBeUndefined();
  });

  it("cannot switch triggers off with session_replication_role", async () => {
    await expect(asService(["set session_replication_role = replica"])).rejects.toThrow(/permission denied to set parameter "session_replication_role"/);
  });

  it("cannot update, delete, truncate, disable a trigger, drop a constraint or drop any stream or its handling history", async () => {
    for (const s of streams) {
      for (const statement of [
        `update ${s} set type = 'Changed'`,
        `delete from ${s}`,
        `truncate ${s}`,
        `alter table ${s} disable trigger all`,
        `alter table ${s} disable trigger refuse_update_delete`,
        `alter table ${s} drop constraint declared_type`,
        `drop table ${s}`,
        `delete from ${s}__handling_history`,
        `truncate ${s}__handling_history`,
      ]) {
        await expect(asService([statement])).rejects.toThrow(/permission denied|must be owner/);
      }
      expect(await rowsIn(s)).toBe(1);
    }
  });

  it("acting as any actor it may become, cannot change or remove a stream row either", async () => {
    for (const actor of actors) {
      for (const s of streams) {
        for (const statement of [`update ${s} set type = 'Changed'`, `delete from ${s}`, `truncate ${s}`, `alter table ${s} disable trigger all`]) {
          await expect(inTransaction(t.db, actor, (tx) => sql.raw(statement).execute(tx))).rejects.toThrow(/permission denied|must be owner|append-only/);
        }
      }
    }
    for (const s of streams) expect(await rowsIn(s)).toBe(1);
  });

  it("holds none of the actors' privileges without acting as one (NOINHERIT)", async () => {
    await expect(t.pool.query("select count(*) from notification.events")).rejects.toThrow(/permission denied/);
    await expect(t.pool.query("insert into notification.client_operations (id, type, payload) values ('x', 'SendNotificationToEntityOp', '{}')")).rejects.toThrow(
      /permission denied/,
    );
  });
});

describe("a more privileged login", () => {
  it("is refused by the start-up check: a superuser, or a member of the owner role", async () => {
    const superuser = createPool(t.adminUrl, 1, "tidings-test");
    try {
      await expect(assertServiceLogin(superuser)).rejects.toThrow(PrivilegedServiceLoginError);
      await expect(assertServiceLogin(superuser)).rejects.toThrow(/a superuser/);
    } finally {
      await superuser.end();
    }
    const migrator = await t.createLogin({ prefix: "migrator", grants: ["tidings_owner"] });
    await expect(assertServiceLogin(migrator.pool)).rejects.toThrow(/a member of tidings_owner/);
  });

  it("npm start with a superuser DATABASE_URL stops with one line saying why, and serves nothing", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
      cwd: path.resolve(__dirname, "../.."),
      env: { ...process.env, DATABASE_URL: t.adminUrl, MIGRATION_DATABASE_URL: "", PORT: "0", LOG_LEVEL: "warn" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stderr = "";
    child.stderr.on("data", (d) => (stderr += String(d)));
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    expect(code).not.toBe(0);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toMatch(/DATABASE_URL logs in as postgres, a superuser/);
  });
});
