import pg from "pg";
import { randomBytes } from "node:crypto";
import { createPool } from "../../src/db/database";
import { listMigrations, migrate, pendingMigrations } from "../../src/db/migrate";
import { loginOf, prepareDatabase } from "../../src/db/roles";
import { databaseUrl, serviceUrl } from "../helpers/db";

describe("migrations", () => {
  const name = `tidings_t_${process.env.TIDINGS_TEST_RUN_ID}_mig_${randomBytes(3).toString("hex")}`;
  const admin = () => new pg.Client({ connectionString: process.env.TIDINGS_TEST_SERVER_URL });

  beforeAll(async () => {
    const c = admin();
    await c.connect();
    await c.query(`create database ${name}`);
    await c.end();
  });
  afterAll(async () => {
    const c = admin();
    await c.connect();
    await c.query(`drop database if exists ${name} with (force)`);
    await c.end();
  });

  it("three processes migrating an empty database at once: each migration applied exactly once", async () => {
    const pools = [1, 2, 3].map(() => createPool(databaseUrl(name), 3, "migrate-test"));
    try {
      expect(await pendingMigrations(pools[0]!)).toHaveLength((await listMigrations()).length);
      const applied = await Promise.all(pools.map((p) => migrate(p)));
      // Whoever got the lock first applied everything; the others found nothing to do.
      expect(applied.map((a) => a.length).sort()).toEqual([0, 0, (await listMigrations()).length]);
      const { rows } = await pools[0]!.query("select id, count(*)::int as n from tidings.migrations group by id");
      expect(rows.every((r) => r.n === 1)).toBe(true);
      expect(await pendingMigrations(pools[1]!)).toEqual([]);
      // graphile-worker's schema came with it.
      const gw = await pools[0]!.query("select to_regclass('graphile_worker._private_jobs')::text as t");
      expect(gw.rows[0].t).toBe("graphile_worker._private_jobs");
    } finally {
      await Promise.all(pools.map((p) => p.end()));
    }
  });
});

describe("a database migrated from another text of the migrations", () => {
  const name = `tidings_t_${process.env.TIDINGS_TEST_RUN_ID}_mig_${randomBytes(3).toString("hex")}`;
  const admin = () => new pg.Client({ connectionString: process.env.TIDINGS_TEST_SERVER_URL });
  let pool: pg.Pool;

  beforeAll(async () => {
    const c = admin();
    await c.connect();
    await c.query(`create database ${name}`);
    await c.end();
    pool = createPool(databaseUrl(name), 2, "migrate-test");
    await migrate(pool);
  });
  afterAll(async () => {
    await pool.end();
    const c = admin();
    await c.connect();
    await c.query(`drop database if exists ${name} with (force)`);
    await c.end();
  });

  it("is refused, naming the migration that differs, and nothing is applied", async () => {
    // As a database made by an earlier pre-release would look: another text under the same number...
    await pool.query("update tidings.migrations set sha256 = sha256('older text') where id = 1");
    await expect(migrate(pool)).rejects.toThrow(/0001_engine\.sql was applied with another text.*recreate the database/);
    // ...or a migration that no longer exists.
    await pool.query("insert into tidings.migrations (id, name, sha256) values (99, 'outbox_once_per_transaction', sha256('x'))");
    await expect(migrate(pool)).rejects.toThrow(/0099_outbox_once_per_transaction was applied but is not in migrations/);
  });
});

describe("the service login prepared by a superuser's migration", () => {
  const name = `tidings_t_${process.env.TIDINGS_TEST_RUN_ID}_tcp_${randomBytes(3).toString("hex")}`;
  const admin = () => new pg.Client({ connectionString: process.env.TIDINGS_TEST_SERVER_URL });
  beforeAll(async () => {
    const c = admin();
    await c.connect();
    await c.query(`create database ${name}`);
    await c.end();
  });
  afterAll(async () => {
    const c = admin();
    await c.connect();
    await c.query(`drop database if exists ${name} with (force)`);
    await c.end();
  });

  it("asks the server for TCP keepalives and a user timeout in each session, so a vanished host's sessions end within the lease", async () => {
    await prepareDatabase(databaseUrl(name), { serviceLogin: loginOf(serviceUrl(name)) });
    const service = new pg.Client({ connectionString: serviceUrl(name) });
    await service.connect();
    try {
      const show = async (setting: string) => (await service.query(`show ${setting}`)).rows[0][setting];
      expect([await show("tcp_keepalives_idle"), await show("tcp_keepalives_interval"), await show("tcp_keepalives_count"), await show("tcp_user_timeout")]).toEqual([
        "10",
        "5",
        "3",
        "20000",
      ]);
    } finally {
      await service.end();
    }
  });
});
