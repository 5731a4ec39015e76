import { decideSaga, type ObservedOutcome, type SagaInput } from "../../src/notification/saga";

const saga = (channels: Array<"email" | "slack">, deadline = "2030-01-01T00:00:00.000Z"): SagaInput => ({
  awaiting: channels.map((channel) => ({ channel, operationId: `n:${channel}`, stream: `${channel}.operations`, destination: "x" })),
  deadline,
  onAllSent: "SentOnAllPreparedChannelsEvent",
  onSomeSent: "SentOnSomePreparedChannelsEvent",
  onNoneSent: "CouldNotSendOnAnyPreparedChannelEvent",
});
const now = new Date("2029-01-01T00:00:00.000Z");
let pos = 0;
const seen = (channel: string, outcome: "succeeded" | "failed", attempt = 1, error: string | null = outcome === "failed" ? "boom" : null): ObservedOutcome => ({
  operationId: `n:${channel}`,
  attempt,
  outcome,
  error,
  source: { stream: `${channel}.events`, position: ++pos },
});

describe("saga outcome rules", () => {
  it("waits until every awaited operation has an outcome", () => {
    expect(decideSaga(saga(["email", "slack"]), [seen("email", "succeeded")], now)).toEqual({ done: false, waitingFor: ["n:slack"] });
  });

  it("all sent, some sent, none sent", () => {
    expect(decideSaga(saga(["email", "slack"]), [seen("email", "succeeded"), seen("slack", "succeeded")], now)).toMatchObject({
      done: true,
      eventType: "SentOnAllPreparedChannelsEvent",
      payload: { sent: ["email", "slack"], failed: [] },
    });
    expect(decideSaga(saga(["email", "slack"]), [seen("email", "succeeded"), seen("slack", "failed")], now)).toMatchObject({
      done: true,
      eventType: "SentOnSomePreparedChannelsEvent",
      payload: { sent: ["email"], failed: ["slack"] },
    });
    expect(decideSaga(saga(["email", "slack"]), [seen("email", "failed"), seen("slack", "failed")], now)).toMatchObject({
      done: true,
      eventType: "CouldNotSendOnAnyPreparedChannelEvent",
      payload: { sent: [], failed: ["email", "slack"] },
    });
  });

  // Which of an operation's outcome events counts (a failure wins within an attempt, a later attempt
  // supersedes) is the database's one definition: those rules are tested in test/int/operationOutcomes.int.test.ts.

  it("a channel counts as sent only if all its operations succeeded", () => {
    const s = saga(["email"]);
    s.awaiting.push({ channel: "email", operationId: "n:email-2", stream: "email.operations", destination: "y" });
    const d = decideSaga(s, [seen("email", "succeeded"), { ...seen("email", "failed"), operationId: "n:email-2" }], now);
    expect(d).toMatchObject({ done: true, eventType: "CouldNotSendOnAnyPreparedChannelEvent", payload: { failed: ["email"] } });
  });

  it("past the deadline, operations without an outcome failed: timed out", () => {
    const d = decideSaga(saga(["email", "slack"], "2028-01-01T00:00:00.000Z"), [seen("email", "succeeded")], now);
    expect(d).toMatchObject({
      done: true,
      eventType: "SentOnSomePreparedChannelsEvent",
      payload: { timedOut: true, operations: expect.arrayContaining([{ operationId: "n:slack", channel: "slack", outcome: "failed", error: "timed out", source: null }]) },
    });
  });
});
