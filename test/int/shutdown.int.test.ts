/**
 * Shutdown within the time Docker gives (10 s): the worker stops taking jobs,
 * lets a send in flight finish for WORKER_SHUTDOWN_GRACE_MS, then cuts it
 * short. Nothing is lost: the cut send is left Running under the process's
 * inline claim, in doubt, and the next worker (once the claim is older than
 * its lease: the stopped process's heartbeat is gone) cancels that attempt
 * as abandoned, sends again
 * (the same Message-ID, so the receiver can drop the repeat) and records the
 * outcome. The send is in flight by construction: the loopback SMTP server
 * holds its reply.
 */
import { allBots } from "../../src/composition";
import { enqueueNotification } from "../../src/notification/enqueue";
import { getHandling, getHistory } from "../../src/streams/handling";
import { Streams } from "../../src/notification/streams";
import { findRecords } from "../../src/streams/read";
import { startTestWorker } from "../helpers/worker";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

const GRACE_MS = 1_500;
/** The grace, the hand-back of the cut job (≤ 1 s) and a margin for a loaded machine. */
const STOP_LIMIT_MS = GRACE_MS + 2_500;

let app: Tidings;
beforeAll(async () => {
  app = await startTidings({ autoStart: false });
});
afterAll(async () => {
  await app.stop();
});

it("a send held past the shutdown grace: the worker stops within the bound, the send is left in doubt, and after a restart the notification reaches its outcome", async () => {
  await createEntity(app.t, "sol", person({ email: "sol@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
  const hold = app.smtp.holdReplies({ count: 1 });
  const first = await startTestWorker(app.t, allBots(), app.deps, { shutdownGraceMs: GRACE_MS, concurrency: 8 });
  const { trackingId } = await enqueueNotification(app.t.db, { entityId: "sol", subject: "Held", text: "Hello from tidings." });
  await hold.waitForHeld(1);

  const stopping = Date.now();
  await first.stop();
  const stoppedInMs = Date.now() - stopping;
  // It waited for the send as long as the grace allowed, and no longer than the bound.
  expect(stoppedInMs).toBeGreaterThanOrEqual(GRACE_MS - 50);
  expect(stoppedInMs).toBeLessThan(STOP_LIMIT_MS);

  // In doubt: still Running under the stopped process's inline claim (the notification bot claimed it), no outcome recorded.
  const [op] = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [trackingId] });
  const state = await getHandling(app.t.adminDb, Streams.emailOperations, op!.position, "email_bot");
  expect(state.status).toBe("Running");
  expect(state.claimedBy).toBe(`inline:${first.processId}`);
  expect(await findRecords(app.t.adminDb, Streams.emailEvents, { ids: [trackingId], types: ["SucceededInSendingEmailEvent", "FailedToSendEmailEvent"] })).toEqual([]);

  // The server had taken the message when the client went away.
  hold.release();
  const second = await startTestWorker(app.t, allBots(), app.deps, { concurrency: 8, leaseMs: 2_000 });
  try {
    const outcome = await waitForOutcome(app.t, trackingId);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
  } finally {
    await second.stop();
  }
  const history = await getHistory(app.t.adminDb, Streams.emailOperations, op!.position, "email_bot");
  expect(history.map((h) => `${h.action}:${h.toStatus}:${h.attempt}`)).toEqual([
    "claim:Running:1",
    "cancel:AvailableAfterExternalCancellation:1",
    "claim:Running:2",
    "complete:Completed:2",
  ]);
  // The stopped process's heartbeat is gone: the next worker hands the claim over after its lease.
  expect(history[1]!.reason).toBe(`attempt 1 by inline:${first.processId} was abandoned before recording an outcome (that process stopped heart-beating); handling again`);
  // Both sends carried the operation's Message-ID: the receiver can tell the repeat.
  const mails = app.smtp.messages.filter((m) => m.to.includes("sol@example.com"));
  expect(mails.length).toBeGreaterThanOrEqual(1);
  expect(new Set(mails.map((m) => m.messageId))).toEqual(new Set([`<${trackingId}.email@example.test>`]));
}, 60_000);
