/**
 * Issue 9.4: actor roles belong to the server, not to a database. A login
 * granted tidings_client for one tidings database must get nothing in
 * another: npm run migrate revokes CONNECT from PUBLIC on the database it
 * migrates, and grants it only to the service login (docs/security.md).
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { createDb, createPool } from "../../src/db/database";
import { prepareDatabase } from "../../src/db/roles";
import { putEntity } from "../../src/entities/entity.repository";
import { person } from "../helpers/tidings";
import { databaseUrl, serviceUrl } from "../helpers/db";

const run = `tidings_t_${process.env.TIDINGS_TEST_RUN_ID}_two_${randomBytes(3).toString("hex")}`;
const [first, second] = [`${run}_a`, `${run}_b`];
const login = `${run}_svc`;
const admin = () => new pg.Client({ connectionString: process.env.TIDINGS_TEST_SERVER_URL });

async function sql(text: string): Promise<void> {
  const c = admin();
  await c.connect();
  try {
    await c.query(text);
  } finally {
    await c.end();
  }
}

function loginUrl(database: string): string {
  const u = new URL(databaseUrl(database));
  u.username = login;
  u.password = "a-service-secret";
  return u.toString();
}

beforeAll(async () => {
  for (const db of [first, second]) {
    await sql(`create database ${db}`);
    // As a user does it: npm run migrate as a superuser, with the service's URL.
    await prepareDatabase(databaseUrl(db), { serviceLogin: { user: new URL(serviceUrl(db)).username, password: process.env.TIDINGS_TEST_SERVICE_PASSWORD! } });
  }
  // The entity the notifications are for (enqueue refuses an unknown one).
  const service = createDb(createPool(serviceUrl(first), 1));
  await putEntity(service, "ada", person(), "test");
  await service.destroy();
  // Another service, granted tidings_client and CONNECT for the first database only.
  await sql(`create role ${login} login password 'a-service-secret'`);
  await sql(`grant tidings_client to ${login}`);
  await sql(`grant connect on database ${first} to ${login}`);
}, 60_000);

afterAll(async () => {
  for (const db of [first, second]) await sql(`drop database if exists ${db} with (force)`);
  await sql(`drop role if exists ${login}`);
});

describe("two tidings databases on one server", () => {
  it("neither is open to PUBLIC", async () => {
    const c = admin();
    await c.connect();
    try {
      const { rows } = await c.query("select datname, has_database_privilege('public', datname, 'CONNECT') as open from pg_database where datname = any($1) order by datname", [
        [first, second],
      ]);
      expect(rows).toEqual([
        { datname: first, open: false },
        { datname: second, open: false },
      ]);
    } finally {
      await c.end();
    }
  });

  it("a login granted tidings_client for one enqueues there and cannot even connect to the other", async () => {
    const here = new pg.Client({ connectionString: loginUrl(first) });
    await here.connect();
    try {
      const { rows } = await here.query("select notification.send_notification_to_entity('ada', 's', 't') as id");
      expect(rows[0].id).toMatch(/^[0-9a-f-]{36}$/);
    } finally {
      await here.end();
    }
    const there = new pg.Client({ connectionString: loginUrl(second) });
    await expect(there.connect()).rejects.toThrow(/permission denied for database/);
    await there.end().catch(() => {});
  });

  it("the service login reaches both (it was granted each by migrate)", async () => {
    for (const db of [first, second]) {
      const c = new pg.Client({ connectionString: serviceUrl(db) });
      await c.connect();
      await c.end();
    }
  });
});
