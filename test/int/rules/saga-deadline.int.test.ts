/**
 * The saga's deadline, given/when/then (test/helpers/given.ts): no workers,
 * and instead of waiting out the deadline the rules' clock moves on to it.
 */
import { enqueueNotification } from "../../../src/notification/enqueue";
import { Streams } from "../../../src/notification/streams";
import { getLatestById } from "../../../src/streams/read";
import { outcomeOf, startRules, whenSettled, type Rules } from "../../helpers/given";
import { createEntity, person } from "../../helpers/tidings";

let rules: Rules;
beforeAll(async () => {
  rules = await startRules({ sagaDeadlineMs: 1_500 });
});
afterAll(async () => {
  await rules.stop();
});

describe("the saga's deadline", () => {
  it("a channel operation that never completes counts as failed, timed out", async () => {
    await createEntity(rules.t, "slow", person({ email: "slow@example.com", slack: "U0SLOW001" }));
    const started = rules.clock.now().getTime();
    const { trackingId } = await enqueueNotification(rules.t.db, { entityId: "slow", subject: "s", text: "t" });
    // Slack never answers (its bot never records an outcome); the email goes through; time passes.
    await whenSettled(rules, { later: true, except: ["slack.operations:slack_bot"] });
    const outcome = (await outcomeOf(rules, trackingId))!;
    expect(rules.clock.now().getTime() - started).toBeGreaterThanOrEqual(1_400);
    expect(outcome.type).toBe("SentOnSomePreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({
      sent: ["email"],
      failed: ["slack"],
      timedOut: true,
      operations: expect.arrayContaining([expect.objectContaining({ channel: "slack", outcome: "failed", error: "timed out", source: null })]),
    });
    // The failure outcome raises the alert like any other.
    expect(await getLatestById(rules.t.adminDb, Streams.notificationEvents, trackingId, { type: "FailedNotificationSentToInternalTeamEvent" })).not.toBeNull();
  });
});
