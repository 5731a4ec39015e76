import { catchUpOnce } from "../../src/bots/catchUp";
import { enqueueNotification } from "../../src/notification/enqueue";
import { createProjectionBot, PROJECTION_CHECKPOINT } from "../../src/notification/projection.bot";
import { Streams } from "../../src/notification/streams";
import { findRecords } from "../../src/streams/read";
import { waitFor } from "../helpers/db";
import { testLogger } from "../helpers/worker";
import { createEntity, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

/** The projection following its streams from a checkpoint, through the whole workflow. */
let app: Tidings;

beforeAll(async () => {
  app = await startTidings();
  await createEntity(app.t, "proj-ada");
});
afterAll(async () => {
  await app.stop();
});

const views = async (id: string) => findRecords(app.t.adminDb, Streams.notificationViews, { ids: [id] });
const snapshots = async (id: string) => findRecords(app.t.adminDb, Streams.notificationSnapshots, { ids: [id] });
const runtime = () => ({ db: app.t.db, deps: app.deps, logger: testLogger, settings: { maxAttempts: 3, retryBaseMs: 50, retryMaxMs: 1000 } });

describe("the projection", () => {
  it("ends with a sent view and a terminal snapshot, and refreshing again from the start writes nothing new", async () => {
    const { trackingId } = await enqueueNotification(app.t.db, { entityId: "proj-ada", subject: "Projected", text: "Hello." });
    await waitForOutcome(app.t, trackingId);
    const last = await waitFor(
      async () => {
        const all = await views(trackingId);
        const view = all.at(-1)?.payload as { status?: string; channels?: Array<{ status: string }> } | undefined;
        return view?.status === "sent" && view.channels?.every((c) => c.status === "sent") ? all : null;
      },
      { what: "the sent view" },
    );
    expect((await snapshots(trackingId)).length).toBeGreaterThanOrEqual(1);
    // Views only change when the notification does: at most one per change it went through.
    expect(last.length).toBeLessThanOrEqual(7);

    // Replaying every record (the checkpoint reset) refreshes the same view: nothing is appended.
    await app.worker!.stop();
    app.worker = null;
    const before = { views: (await views(trackingId)).length, snapshots: (await snapshots(trackingId)).length };
    await app.t.query(`update tidings.checkpoints set cursors = '{}' where name = $1`, [PROJECTION_CHECKPOINT]);
    await waitFor(async () => (await catchUpOnce(createProjectionBot(), runtime())) > 0, { what: "the replay" });
    while ((await catchUpOnce(createProjectionBot(), runtime())) > 0);
    expect((await views(trackingId)).length).toBe(before.views);
    expect((await snapshots(trackingId)).length).toBe(before.snapshots);
    await app.startWorker();
  });
});
