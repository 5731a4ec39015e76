import { inTransaction } from "../../src/db/database";
import { enqueueNotificationInTransaction } from "../../src/notification/enqueue";
import { appendOne } from "../../src/streams/append";
import { claim, transition } from "../../src/streams/handling";
import { Streams } from "../../src/notification/streams";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { createEntity } from "../helpers/tidings";

let t: TestDatabase;
let api: TestApi;
let admin: string;

beforeAll(async () => {
  t = await createTestDatabase();
  // Notifications are for entities that exist: enqueue refuses any other.
  await createEntity(t, "dot");
  await createEntity(t, "eve");
  api = await startApi(t);
  admin = await apiKey(t, ["admin"]);
});
afterAll(async () => {
  await api.close();
  await t.close();
});

const get = (path: string) => api.call("GET", path, { key: admin });
const entities = new Set<string>();
const enqueue = async (entityId: string) => {
  // Notifications are for entities that exist.
  if (!entities.has(entityId)) await createEntity(t, entityId);
  entities.add(entityId);
  return (await api.call("POST", "/v1/notifications", { key: admin, body: { entityId, subject: `to ${entityId}`, text: "hello" } })).json.id as string;
};

/** A view as the projection bot would write it. */
async function writeView(id: string, status: string, extra: Record<string, unknown> = {}) {
  await inTransaction(t.db, "projection_bot", (tx) => appendOne(tx, Streams.notificationViews, { id, type: "NotificationView", payload: { id, status, version: 1, ...extra } }));
}

describe("GET /v1/notifications/:id", () => {
  it("before any view: accepted, with the entity and the request time", async () => {
    const id = await enqueue("ann");
    const answer = await get(`/v1/notifications/${id}`);
    expect(answer.status).toBe(200);
    expect(answer.json).toEqual({ id, status: "accepted", entity: { id: "ann" }, requestedAt: expect.any(String) });
    expect((await get(`/v1/notifications/${id.toUpperCase()}`)).json.id).toBe(id);
  });

  it("serves the latest view exactly as stored", async () => {
    const id = await enqueue("ann");
    await writeView(id, "requested");
    await writeView(id, "sent", { channels: [{ channel: "email", status: "sent" }], note: "ünïcödé ✓" });
    const answer = await get(`/v1/notifications/${id}`);
    expect(answer.contentType).toMatch(/^application\/json/);
    const { rows } = await t.query("select payload::text as text from notification.views where id = $1 order by position desc limit 1", [id]);
    expect(answer.text).toBe(rows[0].text);
    expect(answer.json.status).toBe("sent");
  });
});

describe("GET /v1/notifications (list)", () => {
  const ids: Record<string, string[]> = { cy: [], dot: [] };
  let sinceMark: string;

  beforeAll(async () => {
    ids.cy!.push(await enqueue("cy"), await enqueue("cy"));
    ids.dot!.push(await enqueue("dot"));
    const { rows } = await t.query("select now() as now");
    sinceMark = (rows[0].now as Date).toISOString();
    // Three in one transaction: the same request time, told apart by position.
    const same = await inTransaction(t.db, null, async (tx) => [
      (await enqueueNotificationInTransaction(tx, { entityId: "dot", subject: "s", text: "t" })).trackingId,
      (await enqueueNotificationInTransaction(tx, { entityId: "dot", subject: "s", text: "t" })).trackingId,
      (await enqueueNotificationInTransaction(tx, { entityId: "dot", subject: "s", text: "t" })).trackingId,
    ]);
    ids.dot!.push(...same);
    await writeView(ids.cy![0]!, "failed");
    await writeView(ids.dot![0]!, "sending");
    await writeView(ids.dot![0]!, "sent");
  });

  it("lists newest first, each as its latest view or as accepted", async () => {
    const answer = await get("/v1/notifications?entityId=dot");
    expect(answer.status).toBe(200);
    expect(answer.json.items.map((i: { id: string }) => i.id)).toEqual([...ids.dot!].reverse());
    expect(answer.json.items.at(-1)).toMatchObject({ id: ids.dot![0], status: "sent" });
    expect(answer.json.items[0]).toEqual({ id: ids.dot![3], status: "accepted", entity: { id: "dot" }, requestedAt: expect.any(String) });
    expect(answer.json.next).toBeNull();
  });

  it("pages with a keyset cursor: every notification once, in order, even within one transaction", async () => {
    const all = (await get("/v1/notifications?limit=100")).json.items.map((i: { id: string }) => i.id);
    const paged: string[] = [];
    let next: string | null = null;
    for (let page = 0; page < 50; page++) {
      const answer = await get(`/v1/notifications?limit=1${next ? `&cursor=${next}` : ""}`);
      expect(answer.json.items.length).toBeLessThanOrEqual(1);
      paged.push(...answer.json.items.map((i: { id: string }) => i.id));
      next = answer.json.next;
      if (!next) break;
    }
    expect(paged).toEqual(all);
    expect(new Set(paged).size).toBe(paged.length);
    expect(paged).toEqual(expect.arrayContaining([...ids.cy!, ...ids.dot!]));
  });

  it("filters by entity, status and time, and combines them", async () => {
    const ofCy = (await get("/v1/notifications?entityId=cy")).json.items.map((i: { id: string }) => i.id);
    expect(ofCy).toEqual([ids.cy![1], ids.cy![0]]);
    const failed = (await get("/v1/notifications?status=failed")).json.items;
    expect(failed.map((i: { id: string }) => i.id)).toEqual([ids.cy![0]]);
    const acceptedDot = (await get("/v1/notifications?entityId=dot&status=accepted")).json.items.map((i: { id: string }) => i.id);
    expect(acceptedDot).toEqual([ids.dot![3], ids.dot![2], ids.dot![1]]);
    const since = (await get(`/v1/notifications?since=${encodeURIComponent(sinceMark)}`)).json.items.map((i: { id: string }) => i.id);
    expect(since.sort()).toEqual(ids.dot!.slice(1).sort());
    const paged = await get("/v1/notifications?entityId=dot&limit=2");
    expect(paged.json.items).toHaveLength(2);
    const rest = await get(`/v1/notifications?entityId=dot&limit=2&cursor=${paged.json.next}`);
    expect(rest.json.items.map((i: { id: string }) => i.id)).toEqual([ids.dot![1], ids.dot![0]]);
    expect(rest.json.next).toBeNull();
  });

  it("names the items whose view lags their notification's latest event, with and without a status filter", async () => {
    const id = await enqueue("fay");
    const event = async () =>
      inTransaction(t.db, "notification_bot", async (tx) =>
        Number((await appendOne(tx, Streams.notificationEvents, { id, type: "SendNotificationRequestedEvent", payload: { entityId: "fay" } })).position),
      );
    const behind = async (query: string) => (await get(`/v1/notifications?entityId=fay${query}`)).json.viewsBehind;
    // Accepted, no event yet: nothing to wait for.
    expect(await behind("")).toEqual([]);
    // An event, no view yet.
    const first = await event();
    expect(await behind("")).toEqual([{ id, position: first }]);
    // The view folds it in.
    await writeView(id, "requested", { version: first });
    expect(await behind("")).toEqual([]);
    expect(await behind("&status=requested")).toEqual([]);
    // A later event the view does not include yet: the list still shows the older view, and says so.
    const second = await event();
    const answer = await get("/v1/notifications?entityId=fay");
    expect(answer.json.items).toEqual([expect.objectContaining({ id, status: "requested", version: first })]);
    expect(answer.json.viewsBehind).toEqual([{ id, position: second }]);
    expect(await behind("&status=requested")).toEqual([{ id, position: second }]);
    // Of a wider page, only that row: the others have no event beyond their view.
    expect((await get("/v1/notifications?limit=100")).json.viewsBehind).toEqual([{ id, position: second }]);
  });
});

describe("GET /v1/notifications/:id/events", () => {
  it("returns the notification's records from every stream in order, each with its handling", async () => {
    const id = await enqueue("eve");
    const [op] = (await t.query("select position from notification.client_operations where id = $1", [id])).rows;
    // The notification bot handles the client operation: claim, then complete.
    await inTransaction(t.db, "notification_bot", async (tx) => {
      await claim(tx, { stream: Streams.notificationClientOperations, position: op.position, concern: "notification_bot" }, { actor: "notification_bot" });
      await transition(tx, { stream: Streams.notificationClientOperations, position: op.position, concern: "notification_bot" }, "complete", { actor: "notification_bot" });
      await appendOne(tx, Streams.notificationEvents, {
        id,
        type: "SendNotificationRequestedEvent",
        payload: { entityId: "eve" },
        causedBy: { stream: Streams.notificationClientOperations, position: op.position },
      });
    });
    await writeView(id, "requested");

    const answer = await get(`/v1/notifications/${id}/events`);
    expect(answer.status).toBe(200);
    expect(answer.json.id).toBe(id);
    expect(answer.json.records.map((r: { stream: string; type: string }) => `${r.stream} ${r.type}`)).toEqual([
      "notification.client_operations SendNotificationToEntityOp",
      "notification.events SendNotificationRequestedEvent",
      "notification.views NotificationView",
    ]);
    const [clientOp, event, view] = answer.json.records;
    expect(clientOp).toMatchObject({ position: op.position, payload: { entityId: "eve" }, recordedBy: "tidings_client", causedBy: null });
    expect(clientOp.handling).toEqual([
      {
        concern: "notification_bot",
        status: "Completed",
        attempts: 1,
        lastError: null,
        history: [
          expect.objectContaining({ from: "AvailableByDefault", to: "Running", action: "claim", actor: "notification_bot", attempt: 1 }),
          expect.objectContaining({ from: "Running", to: "Completed", action: "complete", actor: "notification_bot" }),
        ],
      },
    ]);
    expect(event.causedBy).toEqual({ stream: "notification.client_operations", position: op.position });
    // reaction_bot consumes only failure outcomes, and the projection follows a checkpoint
    // (tidings.checkpoints) instead of handling records one by one: no concern handles this event.
    expect(event.handling).toEqual([]);
    expect(view.handling).toEqual([]);
  });

  it("404 for an id no notification has", async () => {
    const answer = await get("/v1/notifications/00000000-0000-4000-8000-000000000001/events");
    expect(answer.status).toBe(404);
  });
});

describe("entities", () => {
  const ada = { kind: "user", name: "Ada", email: "ada@example.com", preferences: { channels: ["email"] } };

  it("PUT creates (201), repeats unchanged (200), changes (200); GET and history follow", async () => {
    const created = await api.call("PUT", "/v1/entities/ada", { key: admin, body: ada });
    expect(created.status).toBe(201);
    expect(created.headers.get("location")).toBe("/v1/entities/ada");
    expect(created.json).toMatchObject({
      result: "created",
      entity: { id: "ada", kind: "user", name: "Ada", email: "ada@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } },
      changed: ["kind", "name", "email", "slack", "preferences"],
      changedBy: expect.stringMatching(/^api key test-admin \(/),
    });
    const same = await api.call("PUT", "/v1/entities/ada", { key: admin, body: ada });
    expect(same.status).toBe(200);
    expect(same.json).toMatchObject({ result: "unchanged", version: created.json.version });

    const firstTime = Date.now();
    await waitFor(async () => Date.now() > firstTime + 5, { intervalMs: 2, what: "the clock to move" });
    const changed = await api.call("PUT", "/v1/entities/ada", { key: admin, body: { ...ada, slack: "U0ADA0001", preferences: { channels: ["slack", "email"] } } });
    expect(changed.status).toBe(200);
    expect(changed.json).toMatchObject({ result: "changed", changed: ["slack", "preferences"] });

    expect((await get("/v1/entities/ada")).json).toMatchObject({ version: changed.json.version, entity: { slack: "U0ADA0001" } });
    const history = (await get("/v1/entities/ada/history")).json;
    expect(history.id).toBe("ada");
    expect(history.versions.map((v: { version: number }) => v.version)).toEqual([created.json.version, changed.json.version]);
    const [v1, v2] = history.versions;

    const between = new Date(Date.parse(v1.recordedAt) + 1).toISOString();
    expect(Date.parse(between)).toBeLessThan(Date.parse(v2.recordedAt));
    expect((await get(`/v1/entities/ada/history?at=${between}`)).json).toMatchObject({ version: v1.version, entity: { slack: null } });
    expect((await get(`/v1/entities/ada/history?at=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`)).json.version).toBe(v2.version);
    const before = await get(`/v1/entities/ada/history?at=2000-01-01T00:00:00Z`);
    expect(before.status).toBe(404);
    expect(before.json.detail).toBe('entity "ada" did not exist at 2000-01-01T00:00:00Z');
    expect((await get("/v1/entities/nobody/history")).status).toBe(404);
  });
});
