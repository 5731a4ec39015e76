import { waitFor } from "../helpers/db";
import { apiKey, countEverything, startApi, type TestApi } from "../helpers/api";
import { createEntity, person, startTidings, type Tidings } from "../helpers/tidings";
import { Streams } from "../../src/notification/streams";
import { getLatestById } from "../../src/streams/read";

/**
 * One request to many entities (`entityIds`): one tracking id each, one
 * transaction, one Idempotency-Key; all or nothing.
 */
let app: Tidings;
let api: TestApi;
let producer = "";
const N = 1000;
const ids = Array.from({ length: N }, (_, i) => `user-${String(i).padStart(4, "0")}`);

beforeAll(async () => {
  app = await startTidings();
  api = await startApi(app.t);
  producer = await apiKey(app.t, ["producer"]);
  for (let i = 0; i < N; i += 50) {
    await Promise.all(
      ids
        .slice(i, i + 50)
        .map((id) => createEntity(app.t, id, person({ name: id, email: `${id}@example.com`, slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }))),
    );
  }
}, 120_000);
afterAll(async () => {
  await api?.close();
  await app?.stop();
});

const send = (body: unknown, key?: string) => api.call("POST", "/v1/notifications", { key: producer, body, ...(key ? { headers: { "idempotency-key": key } } : {}) });

it("1,000 recipients in one request: a tracking id each, in order, one transaction; a repeat answers the same list", async () => {
  const body = { entityIds: ids, subject: "Maintenance tonight", text: "From 22:00 to 23:00." };
  const answer = await send(body, "maintenance-1");
  expect(answer.status).toBe(202);
  const notifications = answer.json.notifications as Array<{ entityId: string; id: string; links: { self: string } }>;
  expect(notifications.map((n) => n.entityId)).toEqual(ids);
  expect(new Set(notifications.map((n) => n.id)).size).toBe(N);
  expect(notifications[0]!.links.self).toBe(`/v1/notifications/${notifications[0]!.id}`);

  const { rows } = await app.t.query<{ n: number; txs: number }>(
    "select count(*)::int as n, count(distinct tx_id)::int as txs from notification.client_operations where id = any($1::text[])",
    [notifications.map((n) => n.id)],
  );
  expect(rows[0]).toEqual({ n: N, txs: 1 });

  const again = await send(body, "maintenance-1");
  expect(again.status).toBe(202);
  expect(again.headers.get("idempotent-replayed")).toBe("true");
  expect(again.json.notifications).toEqual(answer.json.notifications);
  const other = await send({ ...body, subject: "Something else" }, "maintenance-1");
  expect(other.status).toBe(422);

  // Sent out like any other: every recipient's email operation is prepared,
  // and the first one is delivered (delivering all 1,000 proves nothing more
  // and would take most of this file's time).
  const last = notifications[N - 1]!.id;
  await waitFor(() => getLatestById(app.t.adminDb, Streams.emailOperations, last), { timeoutMs: 120_000, what: "the last recipient's email operation" });
  const { rows: prepared } = await app.t.query<{ n: number }>("select count(distinct id)::int as n from email.operations where id = any($1::text[])", [
    notifications.map((n) => n.id),
  ]);
  expect(prepared[0]!.n).toBe(N);
  await waitFor(async () => app.smtp.messages.find((m) => m.to.includes(`${ids[0]}@example.com`) && m.subject === "Maintenance tonight"), {
    timeoutMs: 120_000,
    what: `the email to ${ids[0]}`,
  });
}, 180_000);

it("an unknown entity or a template that cannot be rendered for one refuses the whole request, and nothing is stored", async () => {
  const before = await countEverything(app.t);
  const unknown = await send({ entityIds: [ids[0], "nobody", ids[1]], subject: "x", text: "y" }, "with-nobody");
  expect(unknown.status).toBe(422);
  expect(unknown.json.detail).toMatch(/unknown entity "nobody"/);
  const missing = await send({ entityIds: [ids[0], ids[1]], template: "not-there", data: {} });
  expect(missing.status).toBe(422);
  expect(missing.json.detail).toMatch(/unknown template "not-there"/);
  // The first test's emails may still be going out: compare what a request writes.
  const after = await countEverything(app.t);
  for (const k of ["notification.client_operations", "api.idempotency_keys"]) expect(after[k]).toBe(before[k]);
});

it("refuses entityId with entityIds, a repeated entity and more than 1,000", async () => {
  const both = await send({ entityId: ids[0], entityIds: [ids[1]], subject: "x", text: "y" });
  expect(both.status).toBe(400);
  expect(both.json.errors.map((e: { path: string }) => e.path)).toEqual(["entityIds"]);
  const repeated = await send({ entityIds: [ids[0], ids[0]], subject: "x", text: "y" });
  expect(repeated.json.errors[0]).toMatchObject({ path: "entityIds", message: "must not repeat an entity" });
  const tooMany = await send({ entityIds: [...ids, "one-more"], subject: "x", text: "y" });
  expect(tooMany.status).toBe(400);
});

describe("notification.send_notification_to_entities, from SQL", () => {
  it("enqueues one notification per entity in the caller's transaction, answers the same rows for a repeated key, and is all or nothing", async () => {
    const login = await app.t.createLogin({ prefix: "many", grants: ["tidings_client"] });
    try {
      const call = (entities: string[], key: string | null) =>
        login.pool.query<{ entity_id: string; tracking_id: string }>("select * from notification.send_notification_to_entities($1, 'From SQL', 'Hello.', idempotency_key => $2)", [
          entities,
          key,
        ]);
      const first = await call([ids[2]!, ids[3]!, ids[4]!], "sql-batch");
      expect(first.rows.map((r) => r.entity_id)).toEqual([ids[2], ids[3], ids[4]]);
      const again = await call([ids[2]!, ids[3]!, ids[4]!], "sql-batch");
      expect(again.rows).toEqual(first.rows);
      const { rows } = await app.t.query<{ n: number }>("select count(*)::int as n from notification.client_operations where id = any($1::text[])", [
        first.rows.map((r) => r.tracking_id),
      ]);
      expect(rows[0]!.n).toBe(3);

      const before = (await countEverything(app.t))["notification.client_operations"];
      await expect(call([ids[5]!, "nobody"], null)).rejects.toThrow(/unknown entity "nobody"/);
      await expect(call([ids[5]!, ids[5]!], null)).rejects.toThrow(/must not repeat/);
      await expect(call([ids[5]!], "sql-batch")).rejects.toThrow(/already used with a different request/);
      expect((await countEverything(app.t))["notification.client_operations"]).toBe(before);
    } finally {
      await login.pool.end();
    }
  });
});
