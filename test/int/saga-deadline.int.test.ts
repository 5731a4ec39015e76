import { enqueueNotification } from "../../src/notification/enqueue";
import { Streams } from "../../src/notification/streams";
import { getLatestById } from "../../src/streams/read";
import { waitFor } from "../helpers/db";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

let app: Tidings;
beforeAll(async () => {
  app = await startTidings({ sagaDeadlineMs: 1_500 });
});
afterAll(async () => {
  await app.stop();
});

describe("the saga's deadline", () => {
  it("a channel operation that never completes counts as failed, timed out", async () => {
    await createEntity(app.t, "slow", person({ email: "slow@example.com", slack: "U0SLOW001" }));
    // Slack never answers; the email goes through.
    app.slack.failNext(5, { kind: "hang" });
    const started = Date.now();
    const { trackingId } = await enqueueNotification(app.t.db, { entityId: "slow", subject: "s", text: "t" });
    const outcome = await waitForOutcome(app.t, trackingId, 20_000);
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_400);
    expect(outcome.type).toBe("SentOnSomePreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({
      sent: ["email"],
      failed: ["slack"],
      timedOut: true,
      operations: expect.arrayContaining([expect.objectContaining({ channel: "slack", outcome: "failed", error: "timed out", source: null })]),
    });
    // The failure outcome raises the alert like any other.
    await waitFor(
      () => getLatestById(app.t.adminDb, Streams.notificationEvents, trackingId, { type: "FailedNotificationSentToInternalTeamEvent" }),
      { what: "the alert" },
    );
  });
});
