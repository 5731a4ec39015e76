import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { createEntity } from "../helpers/tidings";

let t: TestDatabase;
let api: TestApi;
let producer: string;

beforeAll(async () => {
  t = await createTestDatabase(30);
  // Notifications are for entities that exist: enqueue refuses any other.
  await createEntity(t, "ada");
  api = await startApi(t);
  producer = await apiKey(t, ["producer"]);
});
afterAll(async () => {
  await api.close();
  await t.close();
});

const body = { entityId: "ada", subject: "Invoice", text: "Your invoice is ready.", tags: { team: "billing" } };
const post = (payload: unknown, idempotencyKey?: string, key = producer) =>
  api.call("POST", "/v1/notifications", { key, body: payload, headers: idempotencyKey ? { "idempotency-key": idempotencyKey } : {} });

async function clientOperations(id: string): Promise<number> {
  return (await t.query("select count(*)::int as n from notification.client_operations where id = $1", [id])).rows[0].n;
}
async function notificationJobs(id: string): Promise<number> {
  const { rows } = await t.query(
    `select count(*)::int as n from graphile_worker._private_jobs j join graphile_worker._private_tasks k on k.id = j.task_id
     where k.identifier = 'notification.client_operations:notification_bot' and j.payload->>'id' = $1`,
    [id],
  );
  return rows[0].n;
}

describe("POST /v1/notifications", () => {
  it("answers 202 with the tracking id and links, and appends the client operation", async () => {
    const answer = await post(body);
    expect(answer.status).toBe(202);
    const id = answer.json.id;
    expect(answer.json).toEqual({
      id: expect.stringMatching(/^[0-9a-f-]{36}$/),
      status: "accepted",
      links: { self: `/v1/notifications/${id}`, events: `/v1/notifications/${id}/events` },
    });
    expect(answer.headers.get("location")).toBe(`/v1/notifications/${id}`);
    const { rows } = await t.query("select payload, recorded_by from notification.client_operations where id = $1", [id]);
    expect(rows).toEqual([{ payload: { ...body }, recorded_by: "tidings_client" }]);
    expect(await notificationJobs(id)).toBe(1);
  });

  it("without an Idempotency-Key, each call is a new notification", async () => {
    const [a, b] = [await post(body), await post(body)];
    expect(a.json.id).not.toBe(b.json.id);
  });

  it("same key and same body: the original answer, no second notification", async () => {
    const first = await post(body, "order-1001");
    expect(first.status).toBe(202);
    expect(first.headers.get("idempotent-replayed")).toBeNull();
    // Same request in another key order, with the default tags spelled out elsewhere: still the same request.
    const again = await post({ tags: { team: "billing" }, text: body.text, subject: body.subject, entityId: "ada" }, "order-1001");
    expect(again.status).toBe(202);
    expect(again.json).toEqual(first.json);
    expect(again.headers.get("idempotent-replayed")).toBe("true");
    expect(await clientOperations(first.json.id)).toBe(1);
    expect(await notificationJobs(first.json.id)).toBe(1);
    const { rows } = await t.query("select key, tracking_id from api.idempotency_keys where key = 'order-1001'");
    expect(rows).toEqual([{ key: "order-1001", tracking_id: first.json.id }]);
  });

  it("same key and a different body: 422 naming the conflict, nothing written", async () => {
    const first = await post(body, "order-1002");
    const changed = await post({ ...body, subject: "Invoice (corrected)" }, "order-1002");
    expect(changed.status).toBe(422);
    expect(changed.contentType).toMatch(/^application\/problem\+json/);
    expect(changed.json).toMatchObject({
      type: "urn:tidings:problem:idempotency-key-reused",
      idempotencyKey: "order-1002",
      notificationId: first.json.id,
    });
    expect(changed.json.detail).toMatch(/Idempotency-Key "order-1002" was already used with a different request/);
    expect(await clientOperations(first.json.id)).toBe(1);
    // The original request still replays.
    expect((await post(body, "order-1002")).json.id).toBe(first.json.id);
  });

  it("keys belong to their API key: another API key with the same key gets a notification of its own and learns nothing", async () => {
    const other = await apiKey(t, ["producer"], "another-service");
    const first = await post(body, "shared-key-1");
    // The same request from another API key is another client's: a new notification.
    const second = await post(body, "shared-key-1", other);
    expect(second.status).toBe(202);
    expect(second.json.id).not.toBe(first.json.id);
    // Another body under the same key from the other API key: accepted too, and it names nothing of the first's.
    const third = await post({ ...body, subject: "Something else" }, "shared-key-2", other);
    const fourth = await post(body, "shared-key-2");
    expect([third.status, fourth.status]).toEqual([202, 202]);
    expect(JSON.stringify(fourth.json)).not.toContain(third.json.id);
    expect(await clientOperations(first.json.id)).toBe(1);
    expect(await clientOperations(second.json.id)).toBe(1);
    // Each one still replays for its own key.
    expect((await post(body, "shared-key-1", other)).json.id).toBe(second.json.id);
    expect((await post(body, "shared-key-1")).json.id).toBe(first.json.id);
  });

  it("20 identical requests at once: one notification, every answer the same", async () => {
    const answers = await Promise.all(Array.from({ length: 20 }, () => post(body, "race-1")));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(202));
    const ids = new Set(answers.map((a) => a.json.id));
    expect(ids.size).toBe(1);
    const [id] = [...ids];
    expect(await clientOperations(id)).toBe(1);
    expect(await notificationJobs(id)).toBe(1);
    expect(answers.filter((a) => a.headers.get("idempotent-replayed") === null)).toHaveLength(1);
  });

  it("two different requests racing for one key: one wins, the other is refused every time", async () => {
    const a = { ...body, subject: "A" };
    const b = { ...body, subject: "B" };
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => post(i % 2 ? a : b, "race-2")));
    const sent = (i: number) => (i % 2 ? a : b).subject;
    const accepted = answers.map((x, i) => ({ ...x, subject: sent(i) })).filter((x) => x.status === 202);
    const refused = answers.filter((x) => x.status === 422);
    expect(accepted.length + refused.length).toBe(20);
    // Every accepted answer carried the winning body, and only that body was stored.
    expect(new Set(accepted.map((x) => x.subject)).size).toBe(1);
    expect(accepted.length).toBe(10);
    expect(new Set(accepted.map((x) => x.json.id)).size).toBe(1);
    const { rows } = await t.query("select payload->>'subject' as subject from notification.client_operations where id = $1", [accepted[0]!.json.id]);
    expect(rows).toEqual([{ subject: accepted[0]!.subject }]);
  });

  it("requests arriving together are committed together, each with its own notification and answer", async () => {
    const requests = Array.from({ length: 100 }, (_, i) => ({ payload: { ...body, subject: `Together ${i}` }, key: i % 2 ? `together-${i}` : undefined }));
    const answers = await Promise.all(requests.map((r) => post(r.payload, r.key)));
    expect(answers.map((a) => a.status)).toEqual(Array(100).fill(202));
    const ids = answers.map((a) => a.json.id as string);
    expect(new Set(ids).size).toBe(100);
    const { rows } = await t.query<{ id: string; subject: string; key: string | null; tx_id: string }>(
      "select id, payload->>'subject' as subject, payload->>'idempotencyKey' as key, tx_id::text from notification.client_operations where id = any($1)",
      [ids],
    );
    const byId = new Map(rows.map((r) => [r.id, r]));
    requests.forEach((r, i) => {
      expect(byId.get(ids[i]!)).toMatchObject({ subject: r.payload.subject, key: r.key ?? null });
    });
    // Group commit: the 100 notifications were written by far fewer transactions.
    const transactions = new Set(rows.map((r) => r.tx_id)).size;
    process.stdout.write(`100 concurrent requests committed in ${transactions} transactions\n`);
    expect(transactions).toBeLessThan(50);
  });

  it("in a shared commit, a request reusing a key with another body is refused alone", async () => {
    await post(body, "shared-reused");
    const answers = await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => post({ ...body, subject: `Fine ${i}` })),
      post({ ...body, subject: "Different" }, "shared-reused"),
      ...Array.from({ length: 10 }, (_, i) => post({ ...body, subject: `Also fine ${i}` })),
    ]);
    expect(answers.map((a) => a.status)).toEqual([...Array(10).fill(202), 422, ...Array(10).fill(202)]);
    expect(answers[10]!.json.detail).toMatch(/shared-reused/);
  });
});
