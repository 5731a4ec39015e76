import { waitFor, type TestLogin } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { findRecords } from "../../src/streams/read";
import { Streams } from "../../src/notification/streams";

/**
 * Categories end to end: Ada opted out of `marketing` over HTTP; a
 * marketing notification is not sent (and says why), a `security` one,
 * critical, reaches her on every channel, and her preferences as they were
 * at a time stay answerable from her history.
 */
let app: Tidings;
let api: TestApi;
const keys = { producer: "", reader: "", entities: "" };

beforeAll(async () => {
  app = await startTidings({ autoStart: false });
  app.deps.notification.criticalCategories = ["security"];
  await app.startWorker();
  api = await startApi(app.t);
  keys.producer = await apiKey(app.t, ["producer"]);
  keys.reader = await apiKey(app.t, ["reader"]);
  keys.entities = await apiKey(app.t, ["entities"]);
});
afterAll(async () => {
  await api?.close();
  await app?.stop();
});

const send = (body: unknown) => api.call("POST", "/v1/notifications", { key: keys.producer, body });
const settled = (id: string) =>
  waitFor(
    async () => {
      const view = (await api.call("GET", `/v1/notifications/${id}`, { key: keys.reader })).json;
      return ["sent", "partially_sent", "failed", "not_sent"].includes(view.status) ? view : undefined;
    },
    { timeoutMs: 20_000, what: `notification ${id} to settle` },
  );

it("an entity opted out of marketing gets no marketing but does get security, and its history answers what it allowed", async () => {
  const created = await api.call("PUT", "/v1/entities/ada", {
    key: keys.entities,
    body: {
      kind: "user",
      name: "Ada",
      email: "ada@example.com",
      slack: "U0ADA0001",
      // She also muted Slack altogether: a critical category ignores that too.
      preferences: { channels: ["email", "slack"], optedOut: ["slack"], categories: { marketing: { optedOut: "all" } } },
    },
  });
  expect(created.status).toBe(201);
  const before = new Date();

  const marketing = await send({ entityId: "ada", category: "marketing", subject: "Spring sale", text: "Everything must go." });
  const security = await send({ entityId: "ada", category: "security", subject: "New sign-in", text: "Was it you?" });
  expect([marketing.status, security.status]).toEqual([202, 202]);

  const notSent = await settled(marketing.json.id);
  expect(notSent.status).toBe("not_sent");
  const sent = await settled(security.json.id);
  expect(sent.status).toBe("sent");
  expect(sent.channels.map((c: { channel: string }) => c.channel).sort()).toEqual(["email", "slack"]);

  await waitFor(async () => app.smtp.messages.find((m) => m.to.includes("ada@example.com") && m.subject === "New sign-in"), { what: "the security email" });
  expect(app.slack.postsOf(`${security.json.id}:slack`)).toHaveLength(1);
  expect(app.smtp.messages.filter((m) => m.subject === "Spring sale")).toEqual([]);

  const outcome = await waitForOutcome(app.t, marketing.json.id);
  expect(outcome.type).toBe("AudienceOptedOutOfAllChannelsEvent");
  expect(outcome.payload).toMatchObject({ category: "marketing", optedOut: ["slack", "email"] });
  const [prepared] = await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [security.json.id], types: ["PreparedToSendOnAllChannelsEvent"] });
  expect(prepared!.payload).toMatchObject({ category: "security", critical: true });

  // She changes her mind; what she allowed before stays answerable.
  await api.call("PUT", "/v1/entities/ada", {
    key: keys.entities,
    body: { kind: "user", name: "Ada", email: "ada@example.com", slack: "U0ADA0001", preferences: { channels: ["email", "slack"] } },
  });
  const then = await api.call("GET", `/v1/entities/ada/history?at=${encodeURIComponent(before.toISOString())}`, { key: keys.entities });
  expect(then.json.entity.preferences.categories).toEqual({ marketing: { optedOut: "all" } });
  const now = await api.call("GET", "/v1/entities/ada", { key: keys.entities });
  expect(now.json.entity.preferences).not.toHaveProperty("categories");
  expect(now.json.changed).toEqual(["preferences"]);
});

it("a category's own channels replace the entity's defaults; an unknown category name is refused", async () => {
  await api.call("PUT", "/v1/entities/bob", {
    key: keys.entities,
    body: {
      kind: "user",
      name: "Bob",
      email: "bob@example.com",
      slack: "U0BOB0001",
      preferences: { channels: ["email", "slack"], categories: { billing: { channels: ["email"] } } },
    },
  });
  const billing = await send({ entityId: "bob", category: "billing", subject: "Invoice", text: "Attached." });
  const view = await settled(billing.json.id);
  expect(view.channels.map((c: { channel: string }) => c.channel)).toEqual(["email"]);
  const bad = await send({ entityId: "bob", category: "Billing!", subject: "x", text: "y" });
  expect(bad.status).toBe(400);
  expect(bad.json.errors[0].path).toBe("category");
});

describe("the SQL functions take a category and a time to send at, as the HTTP API does", () => {
  let shop: TestLogin;
  beforeAll(async () => {
    shop = await app.t.createLogin({ prefix: "catshop", grants: ["tidings_client"] });
    await api.call("PUT", "/v1/entities/cleo", {
      key: keys.entities,
      body: { kind: "user", name: "Cleo", email: "cleo@example.com", preferences: { channels: ["email"], categories: { marketing: { optedOut: "all" } } } },
    });
  });

  it("send_notification_to_entity and _to_entities with a category: the entity's preferences for it apply", async () => {
    const marketing = (await shop.pool.query("select notification.send_notification_to_entity('cleo', 'SQL sale', 'Half price.', category => 'marketing') as id")).rows[0].id;
    const { rows } = await shop.pool.query(
      "select * from notification.send_notification_to_entities(array['cleo', 'bob'], 'SQL sign-in', 'Was it you?', channels => array['email'], category => 'security')",
    );
    expect(rows.map((r) => r.entity_id)).toEqual(["cleo", "bob"]);
    expect((await settled(marketing)).status).toBe("not_sent");
    expect((await waitForOutcome(app.t, marketing)).payload).toMatchObject({ category: "marketing" });
    for (const r of rows) expect((await settled(r.tracking_id)).status).toBe("sent");
    const ops = await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [marketing, ...rows.map((r) => r.tracking_id)] });
    expect(ops.map((o) => (o.payload as { category: string }).category).sort()).toEqual(["marketing", "security", "security"]);
    expect(app.smtp.messages.filter((m) => m.subject === "SQL sale")).toEqual([]);
    await waitFor(async () => app.smtp.messages.find((m) => m.to.includes("cleo@example.com") && m.subject === "SQL sign-in"), { what: "Cleo's security email" });
  });

  it("send_at: a schedule like sendAt's, scheduled until then and cancellable; a repeat under the same key is the same notification", async () => {
    const query = `select notification.send_notification_to_entity('cleo', 'SQL digest', 'Tomorrow.', send_at => $1, idempotency_key => 'digest-1') as id`;
    const tomorrow = new Date(Date.now() + 86_400_000);
    const id = (await shop.pool.query(query, [tomorrow])).rows[0].id as string;
    const [op] = await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [id] });
    const sendAt = (op!.payload as { sendAt: string }).sendAt;
    // Written as the HTTP API writes it (UTC, milliseconds), and the job is due then.
    expect(sendAt).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    expect(sendAt).toBe(tomorrow.toISOString());
    const { rows: jobs } = await app.t.query<{ run_at: Date }>("select run_at from graphile_worker.jobs where key = $1", [
      `notification.client_operations:notification_bot:${op!.position}`,
    ]);
    expect(jobs[0]!.run_at.toISOString()).toBe(sendAt);
    expect((await api.call("GET", `/v1/notifications/${id}`, { key: keys.reader })).json).toMatchObject({ status: "scheduled", sendAt });

    // The same call again (a retry of the caller's transaction): the same notification, not a second one.
    expect((await shop.pool.query(query, [tomorrow])).rows[0].id).toBe(id);
    // The same key for another time is another request: refused.
    await expect(shop.pool.query(query, [new Date(tomorrow.getTime() + 60_000)])).rejects.toThrow(/idempotency key/);
    const cancel = await api.call("POST", `/v1/notifications/${id}/cancel`, { key: keys.producer });
    expect(cancel.json).toMatchObject({ status: "cancelled", sendAt });
  });

  it("refuses a bad category or an infinite send_at, naming the argument", async () => {
    await expect(shop.pool.query("select notification.send_notification_to_entity('cleo', 's', 't', category => 'Billing!')")).rejects.toThrow(/category: must be/);
    await expect(shop.pool.query("select notification.send_notification_to_entity('cleo', 's', 't', send_at => 'infinity')")).rejects.toThrow(/send_at: must be a finite time/);
    await expect(shop.pool.query("select * from notification.send_notification_to_entities(array['cleo'], 's', 't', category => '')")).rejects.toThrow(/category: must be/);
  });
});
