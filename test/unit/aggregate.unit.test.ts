import { applyEvent, foldEvents } from "../../src/notification/aggregate";
import { event, prepared, requested } from "../helpers/notificationEvents";

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
    const state = foldEvents(null, [requested({ t: "1" }), prepared("U0ADA0001"), outcome("SentOnAllPreparedChannelsEvent", true)])!;
    expect(state).toMatchObject({ id: "n1", status: "sent", entityId: "ada", entityName: "Ada", subject: "Hi", tags: { t: "1" }, eventCount: 3, failureReason: null });
    expect(state.channels.map((c) => [c.channel, c.outcome])).toEqual([
      ["email", "succeeded"],
      ["slack", "succeeded"],
    ]);
  });

  it("records partial failure with the reason, then the alert", () => {
    const partial = foldEvents(null, [requested({ t: "1" }), prepared("U0ADA0001"), outcome("SentOnSomePreparedChannelsEvent", false)])!;
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
    const s = foldEvents(null, [requested({ t: "1" }), prepared("U0ADA0001"), outcome("SentOnSomePreparedChannelsEvent", false), outcome("SentOnAllPreparedChannelsEvent", true)])!;
    expect(s.status).toBe("sent");
    expect(s.failureReason).toBeNull();
  });

  it("terminal audience failures", () => {
    expect(foldEvents(null, [requested({ t: "1" }), event("CouldNotGetOrUseAudienceEvent", { entityId: "ada", reason: 'unknown entity "ada"' })])).toMatchObject({
      status: "failed",
      failureReason: 'unknown entity "ada"',
    });
    expect(
      foldEvents(null, [
        requested({ t: "1" }),
        event("AudienceOptedOutOfAllChannelsEvent", { entityId: "ada", optedOut: ["email"], skipped: [{ channel: "email", reason: "opted out" }] }),
      ]),
    ).toMatchObject({
      status: "not_sent",
      failureReason: "opted out of every channel",
    });
  });

  it("folding from a snapshot equals folding from the start", () => {
    const events = [requested({ t: "1" }), prepared("U0ADA0001"), outcome("SentOnAllPreparedChannelsEvent", true)];
    const snapshot = foldEvents(null, events.slice(0, 2));
    expect(foldEvents(snapshot, events.slice(2))).toEqual(foldEvents(null, events));
  });

  it("ignores events before the creation event and rejects malformed payloads", () => {
    expect(applyEvent(null, prepared("U0ADA0001"))).toBeNull();
    expect(() => applyEvent(null, event("SendNotificationRequestedEvent", { subject: 1 }))).toThrow();
  });
});
