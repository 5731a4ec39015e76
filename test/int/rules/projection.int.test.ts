/**
 * The projection's rules, given/when/then (test/helpers/given.ts): given
 * records in the streams it follows, when it catches up, then this view. No
 * workers: the projection runs through catchUpOnce, here.
 */
import { enqueueNotification } from "../../../src/notification/enqueue";
import { newTrackingId } from "../../../src/notification/ids";
import { PROJECTION_CHECKPOINT } from "../../../src/notification/projection.bot";
import { Streams } from "../../../src/notification/streams";
import { findRecords } from "../../../src/streams/read";
import { given, outcomeOf, startRules, viewOf, whenProjectionCatchesUp, whenSettled, type Rules } from "../../helpers/given";
import { createEntity } from "../../helpers/tidings";

let rules: Rules;

beforeAll(async () => {
  rules = await startRules();
  await createEntity(rules.t, "proj-ada");
});
afterAll(async () => {
  await rules.stop();
});

const views = async (id: string) => findRecords(rules.t.adminDb, Streams.notificationViews, { ids: [id] });
const snapshots = async (id: string) => findRecords(rules.t.adminDb, Streams.notificationSnapshots, { ids: [id] });

describe("the projection", () => {
  it("ends with a sent view and a snapshot once SNAPSHOT_EVERY (3 here) events piled up, and refreshing again from the start writes nothing new", async () => {
    const { trackingId } = await enqueueNotification(rules.t.db, { entityId: "proj-ada", subject: "Projected", text: "Hello." });
    await whenSettled(rules);
    expect(await outcomeOf(rules, trackingId)).toBeDefined();
    const last = await views(trackingId);
    const view = last.at(-1)?.payload as { status?: string; channels?: Array<{ status: string }> } | undefined;
    expect(view?.status).toBe("sent");
    expect(view?.channels?.every((c) => c.status === "sent")).toBe(true);
    expect((await snapshots(trackingId)).length).toBeGreaterThanOrEqual(1);
    // Views only change when the notification does: at most one per change it went through.
    expect(last.length).toBeLessThanOrEqual(7);

    // Replaying every record (the checkpoint reset) refreshes the same view: nothing is appended.
    const before = { views: (await views(trackingId)).length, snapshots: (await snapshots(trackingId)).length };
    await rules.t.query(`update tidings.checkpoints set cursors = '{}' where name = $1`, [PROJECTION_CHECKPOINT]);
    expect(await whenProjectionCatchesUp(rules)).toBeGreaterThan(0);
    expect((await views(trackingId)).length).toBe(before.views);
    expect((await snapshots(trackingId)).length).toBe(before.snapshots);
  });

  it("given a request and its audience opted out of everything: a not_sent view with the reason, and no snapshot for two events", async () => {
    const id = newTrackingId();
    const clientOperation = { stream: Streams.notificationClientOperations, position: 1 };
    await given(rules, Streams.notificationEvents, [
      { id, type: "SendNotificationRequestedEvent", payload: { entityId: "proj-ada", subject: "Muted", channelsRequested: null, tags: {}, clientOperation } },
      {
        id,
        type: "AudienceOptedOutOfAllChannelsEvent",
        payload: {
          entityId: "proj-ada",
          optedOut: ["email", "slack"],
          skipped: [
            { channel: "email", reason: "opted out" },
            { channel: "slack", reason: "opted out" },
          ],
        },
      },
    ]);
    await whenProjectionCatchesUp(rules);
    expect(await viewOf(rules, id)).toMatchObject({ id, status: "not_sent", failureReason: "opted out of every channel", outcome: { type: "AudienceOptedOutOfAllChannelsEvent" } });
    // Fewer events than SNAPSHOT_EVERY: folding them is cheaper than a snapshot (no terminal snapshot).
    expect(await snapshots(id)).toEqual([]);
    // Nothing new to read: catching up again writes nothing.
    expect(await whenProjectionCatchesUp(rules)).toBe(0);
    expect(await views(id)).toHaveLength(1);
  });

  it("given only the request: a view that says requested, with no outcome and no snapshot yet", async () => {
    const id = newTrackingId();
    await given(rules, Streams.notificationEvents, [
      {
        id,
        type: "SendNotificationRequestedEvent",
        payload: {
          entityId: "proj-ada",
          subject: "Pending",
          channelsRequested: ["email"],
          tags: { team: "ops" },
          clientOperation: { stream: Streams.notificationClientOperations, position: 1 },
        },
      },
    ]);
    await whenProjectionCatchesUp(rules);
    expect(await viewOf(rules, id)).toMatchObject({ id, status: "requested", outcome: null, tags: { team: "ops" } });
    expect(await snapshots(id)).toEqual([]);
  });
});
