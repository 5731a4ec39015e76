/**
 * Issue 10: delivery that behaves like a mail system and an operator expects.
 * Each test drives HTTP (or the SQL/TypeScript enqueue) in, real SMTP and the
 * Slack stand-in out, and checks the view and the audit.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { removeEntity } from "../../src/entities/entity.repository";
import { UnknownEntityError } from "../../src/errors/errors";
import { enqueueNotification } from "../../src/notification/enqueue";
import { getHandling } from "../../src/streams/handling";
import { Streams } from "../../src/streams/names";
import { findRecords } from "../../src/streams/read";
import { waitFor } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

let app: Tidings;
let api: TestApi;
let key: string;

beforeAll(async () => {
  app = await startTidings();
  api = await startApi(app.t);
  key = await apiKey(app.t, ["producer", "reader"]);
});
afterAll(async () => {
  await api.close();
  await app.stop();
});

const countClientOperations = async () => (await app.t.query("select count(*)::int as n from notification.client_operations")).rows[0].n as number;
const post = (body: unknown) => api.call("POST", "/v1/notifications", { key, body });
const view = async (id: string) => (await api.call("GET", `/v1/notifications/${id}`, { key })).json;

/** The reaction bot has handled the outcome event (so an alert, if any, would be queued by now). */
async function reactionSettled(id: string): Promise<void> {
  const [outcome] = (await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [id] })).slice(-1);
  await waitFor(async () => (await getHandling(app.t.adminDb, Streams.notificationEvents, outcome!.position, "reaction_bot")).status === "Completed", {
    what: "the reaction bot to handle the outcome",
  });
}

describe("an unknown entity is refused at enqueue, nothing stored", () => {
  it("over HTTP: 422 naming the entity", async () => {
    const before = await countClientOperations();
    const answer = await post({ entityId: "nobody", subject: "s", text: "t" });
    expect(answer.status).toBe(422);
    expect(answer.contentType).toMatch(/^application\/problem\+json/);
    expect(answer.json).toMatchObject({ type: "urn:tidings:problem:unknown-entity", entityId: "nobody" });
    expect(answer.json.detail).toMatch(/unknown entity "nobody"/);
    // With an idempotency key too: the key is not taken by the refused request.
    const keyed = await api.call("POST", "/v1/notifications", { key, body: { entityId: "nobody", subject: "s", text: "t" }, headers: { "idempotency-key": "refused-1" } });
    expect(keyed.status).toBe(422);
    expect((await app.t.query("select count(*)::int as n from api.idempotency_keys where key = 'refused-1'")).rows[0].n).toBe(0);
    expect(await countClientOperations()).toBe(before);
  });

  it("from SQL and from TypeScript: an error naming the entity", async () => {
    const before = await countClientOperations();
    const client = await app.t.createLogin({ prefix: "caller", grants: ["tidings_client"] });
    await expect(client.pool.query("select tidings.send_notification_to_entity('nobody', 's', 't')")).rejects.toThrow(/entity_id: unknown entity "nobody"/);
    await expect(enqueueNotification(app.t.db, { entityId: "nobody", subject: "s", text: "t" })).rejects.toThrow(UnknownEntityError);
    // A removed entity is unknown too.
    await createEntity(app.t, "gone", person());
    await removeEntity(app.t.db, "gone", "test");
    await expect(enqueueNotification(app.t.db, { entityId: "gone", subject: "s", text: "t" })).rejects.toThrow(/unknown entity "gone"/);
    expect(await countClientOperations()).toBe(before);
  });
});

describe("an entity with no channel to use: not sent, not a failure", () => {
  it("opted out of every channel: AudienceOptedOutOfAllChannelsEvent, status not_sent with the reason, no alert", async () => {
    await createEntity(app.t, "quiet", person({ preferences: { channels: ["email", "slack"], optedOut: ["email", "slack"], delivery: "all" } }));
    const { id } = (await post({ entityId: "quiet", subject: "s", text: "t" })).json;
    expect((await waitForOutcome(app.t, id)).type).toBe("AudienceOptedOutOfAllChannelsEvent");
    const v = await waitFor(async () => ((await view(id)).status === "not_sent" ? view(id) : undefined), { what: "the view to say not_sent" });
    expect(v.failureReason).toBe("opted out of every channel");
    await reactionSettled(id);
    expect(await findRecords(app.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);
    const audit = await inTransaction(app.t.db, "auditor", (tx) => sql<{ status: string; internal_team_alerted: boolean }>`select status, internal_team_alerted from audit.notifications where tracking_id = ${id}`.execute(tx));
    expect(audit.rows).toEqual([{ status: "not_sent", internal_team_alerted: false }]);
  });

  it("no contact detail for any channel it wants: CouldNotPrepareToSendOnAnyChannelEvent, not_sent, no alert", async () => {
    await createEntity(app.t, "unreachable", person({ email: null, slack: null }));
    const { id } = (await post({ entityId: "unreachable", subject: "s", text: "t" })).json;
    expect((await waitForOutcome(app.t, id)).type).toBe("CouldNotPrepareToSendOnAnyChannelEvent");
    const v = await waitFor(async () => ((await view(id)).status === "not_sent" ? view(id) : undefined), { what: "the view to say not_sent" });
    expect(v.failureReason).toMatch(/email: no email address; slack: no Slack destination/);
    await reactionSettled(id);
    expect(await findRecords(app.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);
  });

  it("with ALERT_ON_NOT_SENT the internal team hears about it", async () => {
    const alerting = await startTidings({ alertOnNotSent: true });
    try {
      await createEntity(alerting.t, "quiet", person({ preferences: { channels: ["email"], optedOut: ["email"], delivery: "all" } }));
      const { trackingId } = await enqueueNotification(alerting.t.db, { entityId: "quiet", subject: "muted", text: "t" });
      await waitForOutcome(alerting.t, trackingId);
      await waitFor(async () => alerting.smtp.messages.find((m) => m.to.includes("oncall@example.test") && (m.subject ?? "").includes(trackingId)), {
        what: "the alert email",
      });
    } finally {
      await alerting.stop();
    }
  });
});
