/**
 * The notification workflow's rules, given/when/then (test/helpers/given.ts):
 * the bots run through the runner's pipeline with no workers, against real
 * PostgreSQL, the loopback SMTP server and the Slack stand-in. What needs
 * real workers and real time stays in test/int/workflow.int.test.ts.
 */
import { inTransaction } from "../../../src/db/database";
import { createNotificationBot } from "../../../src/notification/notification.bot";
import { clientOperation, enqueueNotification, parseSendNotification } from "../../../src/notification/enqueue";
import { newTrackingId } from "../../../src/notification/ids";
import { loadNotification } from "../../../src/notification/projection";
import { getHistory, queueHandling, transition } from "../../../src/streams/handling";
import { Streams } from "../../../src/notification/streams";
import { findRecords, getLatestById } from "../../../src/streams/read";
import { appended, given, handlingOf, outcomeOf, startRules, viewOf, whenHandled, whenSettled, type Rules } from "../../helpers/given";
import { createEntity, enqueueForGoneEntity, person } from "../../helpers/tidings";

let rules: Rules;
beforeAll(async () => {
  rules = await startRules();
});
afterAll(async () => {
  await rules.stop();
});
beforeEach(() => {
  rules.smtp.reset();
  rules.slack.reset();
});

const send = (entityId: string, extra: Record<string, unknown> = {}) =>
  enqueueNotification(rules.t.db, { entityId, subject: "Your report is ready", text: "Hello from tidings.", ...extra });

/** Given a client operation (as the client appends it), when the notification bot handles it. */
async function notificationBotHandles(entityId: string, extra: Record<string, unknown> = {}) {
  const trackingId = newTrackingId();
  const op = parseSendNotification({ entityId, subject: "Your report is ready", text: "Hello from tidings.", ...extra });
  const [record] = await given(rules, Streams.notificationClientOperations, [clientOperation(op, trackingId)]);
  const outcomes = await whenHandled(rules, createNotificationBot(), [record!]);
  return { trackingId, record: record!, outcomes };
}

describe("the notification workflow", () => {
  it("entity prefers email and Slack: both delivered, outcome sent on all, view and snapshot written", async () => {
    await createEntity(rules.t, "ada", person({ email: "ada@example.com", slack: "U0ADA0001" }));
    const { trackingId } = await send("ada", { tags: { team: "billing" } });
    await whenSettled(rules);
    const outcome = (await outcomeOf(rules, trackingId))!;
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");

    const [mail] = rules.smtp.messages.filter((m) => m.to.includes("ada@example.com"));
    expect(mail!.subject).toBe("Your report is ready");
    expect(mail!.text).toContain("Hello from tidings.");
    expect(mail!.messageId).toBe(`<${trackingId}.email@example.test>`);
    const post = rules.slack.posts.find((p) => p.requestedChannel === "U0ADA0001");
    expect(post!.text).toContain("Hello from tidings.");

    expect(await appended(rules, Streams.notificationEvents, trackingId)).toEqual([
      "SendNotificationRequestedEvent",
      "PreparedToSendOnAllChannelsEvent",
      "SentOnAllPreparedChannelsEvent",
    ]);
    expect(await appended(rules, Streams.emailEvents, trackingId)).toEqual(["SendEmailRequestedEvent", "SucceededInSendingEmailEvent"]);
    expect(await appended(rules, Streams.slackEvents, trackingId)).toEqual(["SendSlackMessageRequestedEvent", "SucceededInSendingSlackMessageEvent"]);

    const view = await viewOf(rules, trackingId);
    expect(view).toMatchObject({
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
    const snapshot = await getLatestById(rules.t.adminDb, Streams.notificationSnapshots, trackingId);
    expect(snapshot!.payload).toMatchObject({ aggregate: { status: "sent" } });
    expect(rules.smtp.messages.filter((m) => m.to.includes("oncall@example.test"))).toHaveLength(0);
  });

  it("Slack answers channel_not_found: sent on some, the internal team is alerted", async () => {
    await createEntity(rules.t, "bob", person({ email: "bob@example.com", slack: "#gone" }));
    rules.slack.failNext(1, { kind: "slackError", error: "channel_not_found" });
    const { trackingId } = await send("bob");
    await whenSettled(rules);
    const outcome = (await outcomeOf(rules, trackingId))!;
    expect(outcome.type).toBe("SentOnSomePreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({ sent: ["email"], failed: ["slack"] });

    const alert = rules.smtp.messages.find((m) => m.to.includes("oncall@example.test") && m.subject?.includes(trackingId));
    expect(alert!.subject).toBe(`[tidings] notification ${trackingId} failed: it was sent on some channels only`);
    expect(alert!.text).toContain("channel_not_found");
    expect(await getLatestById(rules.t.adminDb, Streams.notificationEvents, trackingId, { type: "FailedNotificationSentToInternalTeamEvent" })).not.toBeNull();
    expect(await appended(rules, Streams.notificationInternalOperations, trackingId)).toEqual(["AlertInternalTeamOp"]);
  });

  it("SMTP answers 550 and Slack fails: could not send on any, alert sent", async () => {
    await createEntity(rules.t, "cy", person({ email: "cy@example.com", slack: "U0CY00001" }));
    rules.smtp.rejectRecipient("cy@example.com", 550, "5.1.1 No such user");
    rules.slack.failNext(1, { kind: "slackError", error: "account_inactive" });
    const { trackingId } = await send("cy");
    await whenSettled(rules);
    const outcome = (await outcomeOf(rules, trackingId))!;
    expect(outcome.type).toBe("CouldNotSendOnAnyPreparedChannelEvent");
    const failure = await getLatestById(rules.t.adminDb, Streams.emailEvents, trackingId, { type: "FailedToSendEmailEvent" });
    expect(failure!.payload).toMatchObject({ smtpCode: 550, classification: "permanent", attempt: 1 });
    expect(rules.smtp.messages.find((m) => m.to.includes("oncall@example.test") && m.subject?.includes(trackingId))).toBeDefined();
  });

  it("SMTP fails twice transiently then accepts: delivered, three attempts in the history", async () => {
    await createEntity(rules.t, "di", person({ email: "di@example.com", preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    rules.smtp.rejectNext(2, "DATA", 451, "4.3.0 Try again later");
    const { trackingId } = await send("di");
    // The retries are due later: time passes.
    await whenSettled(rules, { later: true });
    const outcome = (await outcomeOf(rules, trackingId))!;
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    const [op] = await findRecords(rules.t.adminDb, Streams.emailOperations, { ids: [trackingId] });
    const history = await getHistory(rules.t.adminDb, Streams.emailOperations, op!.position, "email_bot");
    expect(history.filter((h) => h.action === "claim")).toHaveLength(3);
    expect(history.filter((h) => h.action === "fail").map((h) => h.reason)).toEqual([
      expect.stringMatching(/^attempt 1 failed: .*451/),
      expect.stringMatching(/^attempt 2 failed: .*451/),
    ]);
    expect(await appended(rules, Streams.emailEvents, trackingId)).not.toContain("FailedToSendEmailEvent");
  });

  it("an entity removed between enqueue and handling: CouldNotGetOrUseAudienceEvent, no channel operations", async () => {
    const { trackingId } = await enqueueForGoneEntity(rules.t, "nobody-here");
    const [op] = await findRecords(rules.t.adminDb, Streams.notificationClientOperations, { ids: [trackingId] });
    expect(await whenHandled(rules, createNotificationBot(), [op!])).toEqual(["completed"]);
    expect((await handlingOf(rules, op!, "notification_bot")).status).toBe("Completed");
    const outcome = (await outcomeOf(rules, trackingId))!;
    expect(outcome.type).toBe("CouldNotGetOrUseAudienceEvent");
    expect(outcome.payload).toMatchObject({ reason: 'unknown entity "nobody-here"' });
    expect(
      await findRecords(rules.t.adminDb, Streams.emailOperations, { ids: [trackingId] }).then((r) =>
        r.filter((x) => (x.payload as { purpose: string }).purpose === "notification"),
      ),
    ).toEqual([]);
    expect(await findRecords(rules.t.adminDb, Streams.slackOperations, { ids: [trackingId] })).toEqual([]);
    expect(await findRecords(rules.t.adminDb, Streams.notificationSagas, { ids: [trackingId] })).toEqual([]);
  });

  it("entity opted out of every channel: AudienceOptedOutOfAllChannelsEvent, no channel operations", async () => {
    await createEntity(rules.t, "fay", person({ preferences: { channels: ["email", "slack"], optedOut: ["email", "slack"], delivery: "all" } }));
    const { trackingId, record, outcomes } = await notificationBotHandles("fay", { channels: ["email"] });
    expect(outcomes).toEqual(["completed"]);
    expect((await handlingOf(rules, record, "notification_bot")).status).toBe("Completed");
    const outcome = (await outcomeOf(rules, trackingId))!;
    expect(outcome.type).toBe("AudienceOptedOutOfAllChannelsEvent");
    expect(await findRecords(rules.t.adminDb, Streams.notificationSagas, { ids: [trackingId] })).toEqual([]);
    expect(await findRecords(rules.t.adminDb, Streams.slackOperations, { ids: [trackingId] })).toEqual([]);
  });

  it("the notification bot run twice for the same operation makes no second channel operation or email", async () => {
    await createEntity(rules.t, "gus", person({ email: "gus@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    const { trackingId, position } = await send("gus");
    await whenSettled(rules);
    expect(await outcomeOf(rules, trackingId)).toBeDefined();
    // An operator re-drives the completed client operation.
    await inTransaction(rules.t.db, "operator", async (tx) => {
      await transition(tx, { stream: Streams.notificationClientOperations, position, concern: "notification_bot" }, "reset_completed", {
        actor: "test-operator",
        reason: "re-drive on purpose",
      });
      await queueHandling(tx, Streams.notificationClientOperations, "notification_bot", [position]);
    });
    await whenSettled(rules);
    const second = await handlingOf(rules, { stream: Streams.notificationClientOperations, position }, "notification_bot");
    expect(second.attempts).toBe(2);
    expect(second.status).toBe("Completed");
    expect(await findRecords(rules.t.adminDb, Streams.emailOperations, { ids: [trackingId] })).toHaveLength(1);
    expect(rules.smtp.messages.filter((m) => m.to.includes("gus@example.com"))).toHaveLength(1);
    expect((await appended(rules, Streams.notificationEvents, trackingId)).filter((t) => t === "SendNotificationRequestedEvent")).toHaveLength(1);
  });

  it("loads a notification at any point from the nearest snapshot plus later events", async () => {
    await createEntity(rules.t, "ivy", person({ email: "ivy@example.com", slack: "U0IVY0001" }));
    const { trackingId } = await send("ivy");
    await whenSettled(rules);
    expect(await outcomeOf(rules, trackingId)).toBeDefined();
    expect(await getLatestById(rules.t.adminDb, Streams.notificationSnapshots, trackingId)).not.toBeNull();
    const events = await findRecords(rules.t.adminDb, Streams.notificationEvents, { ids: [trackingId] });
    const now = await loadNotification(rules.t.adminDb, trackingId);
    expect(now.snapshot).not.toBeNull();
    expect(now.aggregate!.status).toBe("sent");
    const atSecond = await loadNotification(rules.t.adminDb, trackingId, { position: events[1]!.position });
    expect(atSecond.aggregate!.status).toBe("sending");
    expect(atSecond.aggregate!.eventCount).toBe(2);
  });
});
