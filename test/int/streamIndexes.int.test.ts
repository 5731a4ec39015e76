import { sql } from "kysely";
import { asOwner, createTestDatabase, declareTestStream, type TestDatabase } from "../helpers/db";

/**
 * Migration 0011: a stream carries the (feed_key, position) index of the
 * gap-safe readers only when something follows it; the others index feed_key
 * alone (read_lag, readAfter's waiting check). Handling histories are indexed
 * by position; client operations by their unique id only.
 */
let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t.close();
});

/** The key columns of each plain index of a table ("feed_key,position"). */
async function indexColumns(table: string): Promise<string[]> {
  const { rows } = await t.query<{ cols: string }>(
    `select string_agg(a.attname, ',' order by k.n) as cols
     from pg_index i
     cross join lateral unnest(i.indkey::int2[]) with ordinality k(attnum, n)
     join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum
     where i.indrelid = $1::regclass and i.indexprs is null and i.indpred is null
     group by i.indexrelid order by 1`,
    [table],
  );
  return rows.map((r) => r.cols);
}

test("followed streams keep (feed_key, position); the others index feed_key alone", async () => {
  for (const followed of [
    "notification.events",
    "email.events",
    "slack.events",
    "notification.sagas",
    "email.operations",
    "notification.client_operations",
    "webhook.deliveries",
  ]) {
    const columns = await indexColumns(followed);
    expect({ followed, columns }).toEqual({ followed, columns: expect.arrayContaining(["feed_key,position"]) });
    expect(columns).not.toContain("feed_key");
  }
  for (const unfollowed of ["notification.views", "notification.snapshots", "entity.events", "entity.erasures", "webhook.endpoints", "template.versions"]) {
    const columns = await indexColumns(unfollowed);
    expect({ unfollowed, columns }).toEqual({ unfollowed, columns: expect.arrayContaining(["feed_key"]) });
    expect(columns).not.toContain("feed_key,position");
  }
});

test("records are found by id: (id) where a tracking id has a few records, (id, position) elsewhere, client operations by their unique id", async () => {
  for (const stream of ["notification.views", "notification.events", "email.events", "slack.events"]) {
    const columns = await indexColumns(stream);
    expect({ stream, columns }).toEqual({ stream, columns: expect.arrayContaining(["id"]) });
    expect(columns).not.toContain("id,position");
  }
  for (const stream of ["notification.sagas", "email.operations", "entity.events", "template.versions", "notification.snapshots"]) {
    const columns = await indexColumns(stream);
    expect({ stream, columns }).toEqual({ stream, columns: expect.arrayContaining(["id,position"]) });
  }
});

test("client operations are found by their unique id; histories by position", async () => {
  expect(await indexColumns("notification.client_operations")).not.toContain("id,position");
  expect(await indexColumns("notification.client_operations")).toContain("id");
  for (const stream of ["email.operations", "notification.client_operations", "entity.events"]) {
    const columns = await indexColumns(`${stream}__handling_history`);
    expect(columns).toContain("position");
    expect(columns).not.toContain("position,concern,entry");
  }
});

test("a stream declared later indexes feed_key alone until a consumer is declared, then (feed_key, position)", async () => {
  await declareTestStream(t.adminDb, { stream: "testing.indexed", producer: "test_producer", consumer: "test_consumer" });
  expect(await indexColumns("testing.indexed")).toEqual(expect.arrayContaining(["feed_key,position", "id,position"]));
  expect(await indexColumns("testing.indexed")).not.toContain("feed_key");
  expect(await indexColumns("testing.indexed__handling_history")).toContain("position");

  await asOwner(t.adminDb, (tx) => sql`select tidings.declare_stream('testing.unfollowed', 'testing', 'event', null, null, 'nobody follows it')`.execute(tx));
  expect(await indexColumns("testing.unfollowed")).toEqual(expect.arrayContaining(["feed_key", "id,position"]));
  expect(await indexColumns("testing.unfollowed")).not.toContain("feed_key,position");

  for (let i = 0; i < 2; i++) await asOwner(t.adminDb, (tx) => sql`select tidings.follow_stream('testing.unfollowed')`.execute(tx));
  const columns = await indexColumns("testing.unfollowed");
  expect(columns.filter((c) => c.startsWith("feed_key"))).toEqual(["feed_key,position"]);
});

/** Migration 0018: handling rows index (concern, status, updated_at) only while not Completed. */
test("handling tables index (concern, status, updated_at) for rows not Completed, in every stream and in one declared later", async () => {
  const partial = async (table: string) =>
    (
      await t.query<{ def: string }>(
        `select pg_get_indexdef(i.indexrelid) as def from pg_index i where i.indrelid = $1::regclass and pg_get_indexdef(i.indexrelid) like '%(concern, status, updated_at)%'`,
        [table],
      )
    ).rows.map((r) => r.def.replace(/^.* USING btree /, ""));
  const { rows: streams } = await t.query<{ name: string }>("select name from tidings.streams where name not like 'testing.%' order by name");
  expect(streams.length).toBeGreaterThan(10);
  for (const { name } of streams)
    expect({ name, indexes: await partial(`${name}__handling`) }).toEqual({
      name,
      indexes: ["(concern, status, updated_at) WHERE (status <> 'Completed'::tidings.handling_status)"],
    });
  await declareTestStream(t.adminDb, { stream: "testing.partial", producer: "test_producer", consumer: "test_consumer" });
  expect(await partial("testing.partial__handling")).toEqual(["(concern, status, updated_at) WHERE (status <> 'Completed'::tidings.handling_status)"]);
});
