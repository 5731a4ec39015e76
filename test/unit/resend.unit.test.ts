import type { Entity } from "../../src/entities/entity.schemas";
import { foldEvents } from "../../src/notification/aggregate";
import { destinationNow, plannedOperations, resendOperationId } from "../../src/notification/resend";
import { decideSaga } from "../../src/notification/saga";
import { at, event, prepared, requested } from "../helpers/notificationEvents";

const op = (operationId: string, channel: "email" | "slack", ok: boolean) => ({
  operationId,
  channel,
  outcome: ok ? ("succeeded" as const) : ("failed" as const),
  error: ok ? null : "channel_not_found",
  source: { stream: `${channel}.events`, position: 1 },
});
const slackFailed = () =>
  event("SentOnSomePreparedChannelsEvent", { sent: ["email"], failed: ["slack"], timedOut: false, operations: [op("n1:email", "email", true), op("n1:slack", "slack", false)] });
const resendRequested = (operations: unknown[], skipped: unknown[] = []) =>
  event("ResendRequestedEvent", { requestedBy: "alice", reason: "renamed", operations, skipped, carriedOver: [], entityVersion: 7 });
const slackResent = () =>
  resendRequested([{ channel: "slack", previousOperationId: "n1:slack", operationId: "n1:slack:resend-1", previousDestination: "#old", destination: "#new" }]);

const ada = (overrides: Partial<Entity> = {}): Entity => ({
  id: "ada",
  kind: "user",
  name: "Ada",
  email: "a@x.test",
  slack: "#new",
  preferences: { channels: ["email", "slack"], optedOut: [], delivery: "first" },
  ...overrides,
});

describe("resend", () => {
  it("the aggregate: the resent channel stands for its new operation and destination until the new outcome", () => {
    const resending = foldEvents(null, [requested(), prepared("#old"), slackFailed(), slackResent()])!;
    expect(resending).toMatchObject({ status: "sending", outcome: null, failureReason: null });
    expect(resending.channels).toEqual([
      { channel: "email", operationId: "n1:email", destination: "a@x.test", outcome: "succeeded", error: null },
      { channel: "slack", operationId: "n1:slack:resend-1", destination: "#new", outcome: "pending", error: null },
    ]);
    expect(resending.resends).toEqual([expect.objectContaining({ requestedBy: "alice", reason: "renamed" })]);

    const sent = foldEvents(resending, [
      event("SentOnAllPreparedChannelsEvent", {
        sent: ["email", "slack"],
        failed: [],
        timedOut: false,
        operations: [op("n1:email", "email", true), op("n1:slack:resend-1", "slack", true)],
      }),
    ])!;
    expect(sent.status).toBe("sent");
    expect(sent.channels.map((c) => [c.channel, c.destination, c.outcome])).toEqual([
      ["email", "a@x.test", "succeeded"],
      ["slack", "#new", "succeeded"],
    ]);
  });

  it("the aggregate: a resend that could send nothing leaves the outcome standing", () => {
    const s = foldEvents(null, [requested(), prepared("#old"), slackFailed(), resendRequested([], [{ channel: "slack", previousOperationId: "n1:slack", reason: "opted out" }])])!;
    expect(s).toMatchObject({ status: "partially_sent", outcome: { type: "SentOnSomePreparedChannelsEvent" }, failureReason: "slack: channel_not_found" });
    expect(s.resends).toHaveLength(1);
  });

  it("the new saga counts the other channels' outcomes: the whole notification's outcome", () => {
    const saga = {
      awaiting: [
        { channel: "email" as const, operationId: "n1:email", stream: "email.operations", destination: "a@x.test" },
        { channel: "slack" as const, operationId: "n1:slack:resend-1", stream: "slack.operations", destination: "#new" },
      ],
      deadline: "2026-11-26T11:00:00.000Z",
      onAllSent: "SentOnAllPreparedChannelsEvent" as const,
      onSomeSent: "SentOnSomePreparedChannelsEvent" as const,
      onNoneSent: "CouldNotSendOnAnyPreparedChannelEvent" as const,
    };
    const email = { operationId: "n1:email", attempt: 1, outcome: "succeeded" as const, error: null, source: { stream: "email.events", position: 1 } };
    // The old Slack operation's failure is not awaited any more.
    const oldSlack = { operationId: "n1:slack", attempt: 1, outcome: "failed" as const, error: "channel_not_found", source: { stream: "slack.events", position: 2 } };
    const newSlack = (ok: boolean) => ({
      operationId: "n1:slack:resend-1",
      attempt: 1,
      outcome: ok ? ("succeeded" as const) : ("failed" as const),
      error: ok ? null : "x",
      source: { stream: "slack.events", position: 3 },
    });
    expect(decideSaga(saga, [email, oldSlack], at)).toEqual({ done: false, waitingFor: ["n1:slack:resend-1"] });
    expect(decideSaga(saga, [email, oldSlack, newSlack(true)], at)).toMatchObject({
      done: true,
      eventType: "SentOnAllPreparedChannelsEvent",
      payload: { sent: ["email", "slack"], failed: [] },
    });
    expect(decideSaga(saga, [email, oldSlack, newSlack(false)], at)).toMatchObject({
      done: true,
      eventType: "SentOnSomePreparedChannelsEvent",
      payload: { sent: ["email"], failed: ["slack"] },
    });
  });

  it("destinations now: each channel on its own (delivery 'first' drops none), opt-outs and missing details skipped", () => {
    expect(destinationNow(ada(), "slack")).toEqual({ destination: "#new" });
    expect(destinationNow(ada(), "email")).toEqual({ destination: "a@x.test" });
    expect(destinationNow(ada({ preferences: { channels: ["email", "slack"], optedOut: ["slack"], delivery: "all" } }), "slack")).toEqual({ skipped: "opted out" });
    expect(destinationNow(ada({ slack: null }), "slack")).toEqual({ skipped: "no Slack destination" });
    expect(destinationNow(null, "email")).toEqual({ skipped: "the entity no longer exists" });
  });

  it("plans known from the events, and resend operation ids", () => {
    const plans = plannedOperations([prepared("#old"), slackResent()]);
    expect([...plans.keys()]).toEqual(["n1:email", "n1:slack", "n1:slack:resend-1"]);
    expect(plans.get("n1:slack:resend-1")).toEqual({ channel: "slack", operationId: "n1:slack:resend-1", stream: "slack.operations", destination: "#new" });
    expect(resendOperationId("n1", "email", 2)).toBe("n1:email:resend-2");
  });
});
