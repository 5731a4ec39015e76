import { inTransaction } from "../../src/db/database";
import { getEntity, getEntityHistory, putEntity } from "../../src/entities/entity.repository";
import { enqueueNotification } from "../../src/notification/enqueue";
import { loadNotification } from "../../src/notification/projection";
import { getHandling, getHistory, queueHandling, transition } from "../../src/streams/handling";
import { Streams } from "../../src/notification/streams";
import { findRecords, getLatestById } from "../../src/streams/read";
import { waitFor } from "../helpers/db";
import { createEntity, enqueueForGoneEntity, eventTypes, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

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
  it("entity prefers email and Slack: both delivered, outcome sent on all, view and snapshot written", async () => {
    await createEntity(app.t, "ada", person({ email: "ada@example.com", slack: "U0ADA0001" }));
    const { trackingId } = await send("ada", { tags: { team: "billing" } });
    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");

    const [mail] = app.smtp.messages.filter((m) => m.to.includes("ada@example.com"));
    expect(mail!.subject).toBe("Your report is ready");
    expect(mail!.text).toContain("Hello from tidings.");
    expect(mail!.messageId).toBe(`<${trackingId}.email@example.test>`);
    const post = app.slack.posts.find((p) => p.requestedChannel === "U0ADA0001");
    expect(post!.text).toContain("Hello from tidings.");

    expect(await eventTypes(app.t, Streams.notificationEvents, trackingId)).toEqual([
      "SendNotificationRequestedEvent",
      "PreparedToSendOnAllChannelsEvent",
      "SentOnAllPreparedChannelsEvent",
    ]);
    expect(await eventTypes(app.t, Streams.emailEvents, trackingId)).toEqual(["SendEmailRequestedEvent", "SucceededInSendingEmailEvent"]);
    expect(await eventTypes(app.t, Streams.slackEvents, trackingId)).toEqual([
      "SendSlackMessageRequestedEvent",
      "SucceededInSendingSlackMessageEvent",
    ]);

    const view = await waitFor(async () => {
      const v = await getLatestById(app.t.adminDb, Streams.notificationViews, trackingId);
      return v && (v.payload as { status: string }).status === "sent" ? v : undefined;
    }, { what: "the final view" });
    expect(view.payload).toMatchObject({
      id: trackingId,
      status: "sent",
      entity: { id: "ada", name: "Test Person" },
      tags: { team: "billing" },
      outcome: { type: "SentOnAllPreparedChannelsEvent" },
      channels: [
        { channel: "email", destination: "ada@example.com", status: "sent", attempts: 1, lastError: null },
        { channel: "slack", destination: "U0ADA0001", status: "sent", attempts: 1, lastError: null },
      ],
    });
    const snapshot = await waitFor(() => getLatestById(app.t.adminDb, Streams.notificationSnapshots, trackingId), { what: "a snapshot" });
    expect(snapshot.payload).toMatchObject({ aggregate: { status: "sent" } });
    expect(app.smtp.messages.filter((m) => m.to.includes("oncall@example.test"))).toHaveLength(0);
  });

  it("Slack answers channel_not_found: sent on some, the internal team is alerted", async () => {
    await createEntity(app.t, "bob", person({ email: "bob@example.com", slack: "#gone" }));
    app.slack.failNext(1, { kind: "slackError", error: "channel_not_found" });
    const { trackingId } = await send("bob");
    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("SentOnSomePreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({ sent: ["email"], failed: ["slack"] });

    const alert = await waitFor(async () => app.smtp.messages.find((m) => m.to.includes("oncall@example.test") && m.subject?.includes(trackingId)), {
      what: "the alert email",
    });
    expect(alert.subject).toBe(`[tidings] notification ${trackingId} failed: it was sent on some channels only`);
    expect(alert.text).toContain("channel_not_found");
    await waitFor(() => getLatestById(app.t.adminDb, Streams.notificationEvents, trackingId, { type: "FailedNotificationSentToInternalTeamEvent" }), {
      what: "FailedNotificationSentToInternalTeamEvent",
    });
    expect(await eventTypes(app.t, Streams.notificationInternalOperations, trackingId)).toEqual(["AlertInternalTeamOp"]);
  });

  it("SMTP answers 550 and Slack fails: could not send on any, alert sent", async () => {
    await createEntity(app.t, "cy", person({ email: "cy@example.com", slack: "U0CY00001" }));
    app.smtp.rejectRecipient("cy@example.com", 550, "5.1.1 No such user");
    app.slack.failNext(1, { kind: "slackError", error: "account_inactive" });
    const { trackingId } = await send("cy");
    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("CouldNotSendOnAnyPreparedChannelEvent");
    const failure = await getLatestById(app.t.adminDb, Streams.emailEvents, trackingId, { type: "FailedToSendEmailEvent" });
    expect(failure!.payload).toMatchObject({ smtpCode: 550, classification: "permanent", attempt: 1 });
    await waitFor(async () => app.smtp.messages.find((m) => m.to.includes("oncall@example.test") && m.subject?.includes(trackingId)), {
      what: "the alert email",
    });
  });

  it("SMTP fails twice transiently then accepts: delivered, three attempts in the history", async () => {
    await createEntity(app.t, "di", person({ email: "di@example.com", preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    app.smtp.rejectNext(2, "DATA", 451, "4.3.0 Try again later");
    const { trackingId } = await send("di");
    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    const [op] = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [trackingId] });
    const history = await getHistory(app.t.adminDb, Streams.emailOperations, op!.position, "email_bot");
    expect(history.filter((h) => h.action === "claim")).toHaveLength(3);
    expect(history.filter((h) => h.action === "fail").map((h) => h.reason)).toEqual([
      expect.stringMatching(/^attempt 1 failed: .*451/),
      expect.stringMatching(/^attempt 2 failed: .*451/),
    ]);
    expect(await eventTypes(app.t, Streams.emailEvents, trackingId)).not.toContain("FailedToSendEmailEvent");
  });

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

  it("an entity removed between enqueue and handling: CouldNotGetOrUseAudienceEvent, no channel operations", async () => {
    const { trackingId } = await enqueueForGoneEntity(app.t, "nobody-here");
    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("CouldNotGetOrUseAudienceEvent");
    expect(outcome.payload).toMatchObject({ reason: 'unknown entity "nobody-here"' });
    expect(await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [trackingId] }).then((r) => r.filter((x) => (x.payload as { purpose: string }).purpose === "notification"))).toEqual([]);
    expect(await findRecords(app.t.adminDb, Streams.slackOperations, { ids: [trackingId] })).toEqual([]);
    expect(await findRecords(app.t.adminDb, Streams.notificationSagas, { ids: [trackingId] })).toEqual([]);
  });

  it("entity opted out of every channel: AudienceOptedOutOfAllChannelsEvent, no channel operations", async () => {
    await createEntity(app.t, "fay", person({ preferences: { channels: ["email", "slack"], optedOut: ["email", "slack"], delivery: "all" } }));
    const { trackingId } = await send("fay", { channels: ["email"] });
    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("AudienceOptedOutOfAllChannelsEvent");
    expect(await findRecords(app.t.adminDb, Streams.notificationSagas, { ids: [trackingId] })).toEqual([]);
    expect(await findRecords(app.t.adminDb, Streams.slackOperations, { ids: [trackingId] })).toEqual([]);
  });

  it("the notification bot run twice for the same operation makes no second channel operation or email", async () => {
    await createEntity(app.t, "gus", person({ email: "gus@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    const { trackingId, position } = await send("gus");
    await waitForOutcome(app.t, trackingId);
    // An operator re-drives the completed client operation.
    await inTransaction(app.t.db, "operator", async (tx) => {
      await transition(tx, { stream: Streams.notificationClientOperations, position, concern: "notification_bot" }, "reset_completed", {
        actor: "test-operator",
        reason: "re-drive on purpose",
      });
      await queueHandling(tx, Streams.notificationClientOperations, "notification_bot", [position]);
    });
    await waitFor(async () => (await getHandling(app.t.adminDb, Streams.notificationClientOperations, position, "notification_bot")).attempts === 2 &&
      (await getHandling(app.t.adminDb, Streams.notificationClientOperations, position, "notification_bot")).status === "Completed", { what: "the second run" });
    expect(await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [trackingId] })).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 300));
    expect(app.smtp.messages.filter((m) => m.to.includes("gus@example.com"))).toHaveLength(1);
    expect((await eventTypes(app.t, Streams.notificationEvents, trackingId)).filter((t) => t === "SendNotificationRequestedEvent")).toHaveLength(1);
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

  it("loads a notification at any point from the nearest snapshot plus later events", async () => {
    await createEntity(app.t, "ivy", person({ email: "ivy@example.com", slack: "U0IVY0001" }));
    const { trackingId } = await send("ivy");
    await waitForOutcome(app.t, trackingId);
    await waitFor(() => getLatestById(app.t.adminDb, Streams.notificationSnapshots, trackingId), { what: "a snapshot" });
    const events = await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [trackingId] });
    const now = await loadNotification(app.t.adminDb, trackingId);
    expect(now.snapshot).not.toBeNull();
    expect(now.aggregate!.status).toBe("sent");
    const atSecond = await loadNotification(app.t.adminDb, trackingId, { position: events[1]!.position });
    expect(atSecond.aggregate!.status).toBe("sending");
    expect(atSecond.aggregate!.eventCount).toBe(2);
  });
});
