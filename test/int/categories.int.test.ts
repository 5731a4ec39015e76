import { waitFor } from "../helpers/db";
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
