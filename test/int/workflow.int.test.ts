/**
 * The workflow end to end, where only real workers and real time show it.
 * Its rules (each bot's decisions, the projection's view) are tested
 * given/when/then, with no workers, in test/int/rules/workflow.int.test.ts.
 */
import { getEntity, getEntityHistory, putEntity } from "../../src/entities/entity.repository";
import { enqueueNotification } from "../../src/notification/enqueue";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

let app: Tidings;
beforeAll(async () => {
  app = await startTidings();
});
afterAll(async () => {
  await app.stop();
});
beforeEach(() => {
  app.smtp.reset();
  app.slack.reset();
});

const send = (entityId: string, extra: Record<string, unknown> = {}) =>
  enqueueNotification(app.t.db, { entityId, subject: "Your report is ready", text: "Hello from tidings.", ...extra });

describe("the notification workflow", () => {
  it("Slack 429 with Retry-After 1: delivered after at least one second", async () => {
    await createEntity(app.t, "eve", person({ slack: "U0EVE0001", preferences: { channels: ["slack"], optedOut: [], delivery: "all" } }));
    app.slack.failNext(1, { kind: "rateLimited", retryAfterSec: 1 });
    const started = Date.now();
    const { trackingId } = await send("eve");
    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    const calls = app.slack.calls.filter((c) => c.method === "chat.postMessage");
    expect(calls).toHaveLength(2);
    expect(calls[1]!.receivedAt - calls[0]!.receivedAt).toBeGreaterThanOrEqual(1000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1000);
  });

  it("remembers what an entity allowed before a change", async () => {
    const first = await putEntity(app.t.db, "hal", person({ preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all" } }), "hal");
    await new Promise((r) => setTimeout(r, 20));
    const between = new Date();
    await new Promise((r) => setTimeout(r, 20));
    const second = await putEntity(app.t.db, "hal", person({ preferences: { channels: ["slack"], optedOut: ["email"], delivery: "all" } }), "hal");
    expect(second.changed).toBe(true);
    expect(second.version.changed).toEqual(["preferences"]);
    expect((await getEntity(app.t.adminDb, "hal", between))!.entity.preferences).toEqual(first.version.entity.preferences);
    expect((await getEntity(app.t.adminDb, "hal"))!.entity.preferences.optedOut).toEqual(["email"]);
    expect(await getEntityHistory(app.t.adminDb, "hal")).toHaveLength(2);
    // an unchanged PUT records nothing
    expect((await putEntity(app.t.db, "hal", person({ preferences: { channels: ["slack"], optedOut: ["email"], delivery: "all" } }), "hal")).changed).toBe(false);
  });
});
