import { applyEvent, foldEvents } from "../../src/notification/aggregate";
import type { StreamRecord } from "../../src/streams/interfaces";

let position = 0;
const at = new Date("2026-11-26T10:00:00.000Z");
function event(type: string, payload: unknown): StreamRecord {
  position += 1;
  return {
    stream: "notification.events",
    position,
    id: "n1",
    type,
    payload,
    tags: {},
    causedBy: null,
    recordedAt: new Date(at.getTime() + position * 1000),
    recordedBy: "x",
    txId: String(position),
    feedKey: String(position),
  };
}
const requested = () =>
  event("SendNotificationRequestedEvent", {
    entityId: "ada",
    subject: "Hi",
    channelsRequested: null,
    tags: { t: "1" },
    clientOperation: { stream: "notification.client_operations", position: 1 },
  });
const prepared = () =>
  event("PreparedToSendOnAllChannelsEvent", {
    entityId: "ada",
    entityName: "Ada",
    entityVersion: 1,
    skipped: [],
    prepared: [
      { channel: "email", operationId: "n1:email", stream: "email.operations", destination: "a@x.test" },
      { channel: "slack", operationId: "n1:slack", stream: "slack.operations", destination: "U0ADA0001" },
    ],
  });
const outcome = (type: string, slackOk: boolean) =>
  event(type, {
    sent: slackOk ? ["email", "slack"] : ["email"],
    failed: slackOk ? [] : ["slack"],
    timedOut: false,
    operations: [
      { operationId: "n1:email", channel: "email", outcome: "succeeded", error: null, source: { stream: "email.events", position: 2 } },
      {
        operationId: "n1:slack",
        channel: "slack",
        outcome: slackOk ? "succeeded" : "failed",
        error: slackOk ? null : "channel_not_found",
        source: { stream: "slack.events", position: 2 },
      },
    ],
  });

describe("the notification aggregate", () => {
  it("folds a successful notification", () => {
    const state = foldEvents(null, [requested(), prepared(), outcome("SentOnAllPreparedChannelsEvent", true)])!;
    expect(state).toMatchObject({ id: "n1", status: "sent", entityId: "ada", entityName: "Ada", subject: "Hi", tags: { t: "1" }, eventCount: 3, failureReason: null });
    expect(state.channels.map((c) => [c.channel, c.outcome])).toEqual([
      ["email", "succeeded"],
      ["slack", "succeeded"],
    ]);
  });

  it("records partial failure with the reason, then the alert", () => {
    const partial = foldEvents(null, [requested(), prepared(), outcome("SentOnSomePreparedChannelsEvent", false)])!;
    expect(partial.status).toBe("partially_sent");
    expect(partial.failureReason).toBe("slack: channel_not_found");
    const alerted = applyEvent(
      partial,
      event("FailedNotificationSentToInternalTeamEvent", {
        failureEventType: "SentOnSomePreparedChannelsEvent",
        operations: [{ channel: "email", operationId: "n1:alert-9:email", destination: "ops@x.test" }],
      }),
    )!;
    expect(alerted.alert?.operations).toHaveLength(1);
    expect(alerted.status).toBe("partially_sent");
  });

  it("a later outcome (after a re-drive) replaces the earlier one", () => {
    const s = foldEvents(null, [requested(), prepared(), outcome("SentOnSomePreparedChannelsEvent", false), outcome("SentOnAllPreparedChannelsEvent", true)])!;
    expect(s.status).toBe("sent");
    expect(s.failureReason).toBeNull();
  });

  it("terminal audience failures", () => {
    expect(foldEvents(null, [requested(), event("CouldNotGetOrUseAudienceEvent", { entityId: "ada", reason: 'unknown entity "ada"' })])).toMatchObject({
      status: "failed",
      failureReason: 'unknown entity "ada"',
    });
    expect(
      foldEvents(null, [requested(), event("AudienceOptedOutOfAllChannelsEvent", { entityId: "ada", optedOut: ["email"], skipped: [{ channel: "email", reason: "opted out" }] })]),
    ).toMatchObject({
      status: "not_sent",
      failureReason: "opted out of every channel",
    });
  });

  it("folding from a snapshot equals folding from the start", () => {
    const events = [requested(), prepared(), outcome("SentOnAllPreparedChannelsEvent", true)];
    const snapshot = foldEvents(null, events.slice(0, 2));
    expect(foldEvents(snapshot, events.slice(2))).toEqual(foldEvents(null, events));
  });

  it("ignores events before the creation event and rejects malformed payloads", () => {
    expect(applyEvent(null, prepared())).toBeNull();
    expect(() => applyEvent(null, event("SendNotificationRequestedEvent", { subject: 1 }))).toThrow();
  });
});
