/**
 * The re-drive tool where real time is the point: a record counts as stuck
 * only once it has been Running for a while (by the database's clock), and
 * the re-queued work is then done by real workers. The tool's other rules
 * are tested given/when/then in test/int/rules/redrive.int.test.ts.
 */
import { findStuck, runAction } from "../../src/admin/redrive";
import { inTransaction } from "../../src/db/database";
import { enqueueNotificationInTransaction } from "../../src/notification/enqueue";
import { claim, getHistory } from "../../src/streams/handling";
import type { StreamRecord } from "../../src/streams/interfaces";
import { Streams } from "../../src/notification/streams";
import { getLatestById } from "../../src/streams/read";
import { waitFor } from "../helpers/db";
import { OUTCOME_TYPES, createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

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

async function latestOutcome(id: string): Promise<StreamRecord | undefined> {
  return getLatestById(app.t.adminDb, Streams.notificationEvents, id, { types: OUTCOME_TYPES });
}

describe("redrive", () => {
  it("cancels a record stuck Running, and --requeue lets the notification go out", async () => {
    await createEntity(app.t, "stuck-sam", person({ email: "sam@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    // A worker claims the client operation and dies before recording an outcome.
    const { trackingId, position } = await inTransaction(app.t.db, "notification_bot", async (tx) => {
      const enqueued = await enqueueNotificationInTransaction(tx, { entityId: "stuck-sam", subject: "Stuck", text: "Held by a dead worker." });
      const claimed = await claim(
        tx,
        { stream: Streams.notificationClientOperations, position: enqueued.position, concern: "notification_bot" },
        {
          actor: "notification_bot",
          claimedBy: "job 0 on a lost host",
        },
      );
      expect(claimed.claimed).toBe(true);
      return enqueued;
    });

    expect((await findStuck(app.t.db, { notification: trackingId, olderThan: "1h" })).running.records).toEqual([]);
    const stuck = await waitFor(
      async () => {
        const report = await findStuck(app.t.db, { notification: trackingId, olderThan: "300ms" });
        return report.running.records.length === 1 ? report : undefined;
      },
      { what: "the record to count as stuck" },
    );
    expect(stuck.running.records[0]).toMatchObject({ concern: "notification_bot", status: "Running", claimedBy: "job 0 on a lost host" });
    expect(await latestOutcome(trackingId)).toBeUndefined();

    const report = await runAction(
      app.t.db,
      "cancel-running",
      { notification: trackingId, olderThan: "300ms" },
      { execute: true, reason: "worker host was lost", actor: "bob", requeue: true },
    );
    expect(report).toMatchObject({ changed: 1, queued: 1, changes: [expect.objectContaining({ status: "Running", to: "AvailableAfterExternalCancellation" })] });

    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    await waitFor(async () => app.smtp.messages.some((m) => m.to.includes("sam@example.com")), { what: "the email" });
    const history = await getHistory(app.t.adminDb, Streams.notificationClientOperations, position, "notification_bot");
    expect(history.find((h) => h.action === "cancel")).toMatchObject({
      actor: "bob",
      reason: "worker host was lost",
      details: { verb: "cancel-running", cancelled: { attempt: 1, claimedBy: "job 0 on a lost host" }, requeue: true },
    });
  });
});
