import { allBots } from "../../src/composition";
import { startWorker } from "../../src/bots/worker";
import { findRecords } from "../../src/streams/read";
import { Streams } from "../../src/notification/streams";
import { waitFor } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { testLogger } from "../helpers/worker";

/**
 * Scheduled sends end to end. "Early" is a construction, not a sleep: a
 * schedule a day ahead, and then two test hooks, both documented in
 * docs/templates.md: the job's run_at moved to now (graphile_worker.jobs,
 * as an operator's re-drive would make it run), and the workers' clock
 * (the bot runtime's `clock`) moved past the schedule on a restart.
 */
let app: Tidings;
let api: TestApi;
const keys = { producer: "", reader: "" };
const DAY = 86_400_000;

beforeAll(async () => {
  app = await startTidings({ autoStart: false });
  api = await startApi(app.t);
  keys.producer = await apiKey(app.t, ["producer"]);
  keys.reader = await apiKey(app.t, ["reader"]);
  await createEntity(app.t, "ada", person({ name: "Ada", email: "ada@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
});
afterAll(async () => {
  await api?.close();
  await app?.stop();
});

/** Workers with a clock `aheadMs` ahead of the database's (0: the database's own). */
async function startWorkers(aheadMs: number) {
  // One set at a time: a test that failed half-way left its workers running, and they would keep jest from exiting.
  await app.worker?.stop();
  app.worker = await startWorker({
    pool: app.t.pool,
    db: app.t.db,
    bots: allBots(),
    runtime: {
      db: app.t.db,
      deps: app.deps,
      logger: testLogger,
      settings: { maxAttempts: 3, retryBaseMs: 50, retryMaxMs: 1_000 },
      ...(aheadMs === 0 ? {} : { clock: () => new Date(Date.now() + aheadMs) }),
    },
    settings: { concurrency: 4, pollIntervalMs: 50, leaseMs: 30_000 },
    logger: testLogger,
  });
}

const send = (body: unknown) => api.call("POST", "/v1/notifications", { key: keys.producer, body });
const clientOp = async (id: string) => (await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [id] }))[0]!;
const jobKey = async (id: string) => `notification.client_operations:notification_bot:${(await clientOp(id)).position}`;
/** Test hook: the notification bot's job for this notification runs now (as a re-drive would make it). */
const runJobNow = async (id: string) => {
  const { rowCount } = await app.t.query("update graphile_worker._private_jobs set run_at = now() where key = $1", [await jobKey(id)]);
  expect(rowCount).toBe(1);
};
const handlingOf = async (id: string) => {
  const { rows } = await app.t.query<{ status: string }>(
    "select h.status from notification.client_operations o join notification.client_operations__handling h on h.position = o.position where o.id = $1 and h.concern = 'notification_bot'",
    [id],
  );
  return rows[0]?.status;
};
const getView = (id: string) => api.call("GET", `/v1/notifications/${id}`, { key: keys.reader });
const listScheduled = async () => {
  const page = await api.call("GET", "/v1/notifications?status=scheduled&limit=100", { key: keys.reader });
  expect(page.status).toBe(200);
  for (const item of page.json.items) expect(item).toMatchObject({ status: "scheduled", sendAt: expect.any(String) });
  return page.json.items;
};
const mailsWith = (subject: string) => app.smtp.messages.filter((m) => m.subject === subject);

it("a scheduled send is a record and a job at its time; run early it waits, and after a restart past its time it is sent", async () => {
  await startWorkers(0);
  const sendAt = new Date(Date.now() + DAY).toISOString();
  const answer = await send({ entityId: "ada", subject: "Tomorrow's digest", text: "Here it is.", sendAt });
  expect(answer.status).toBe(202);
  const id = answer.json.id as string;
  expect((await clientOp(id)).payload).toMatchObject({ sendAt });
  const { rows } = await app.t.query<{ run_at: Date }>("select run_at from graphile_worker.jobs where key = $1", [await jobKey(id)]);
  expect(rows[0]!.run_at.toISOString()).toBe(sendAt);
  // Until its time, GET and the list say it is scheduled, and for when.
  const scheduled = (await getView(id)).json;
  expect(scheduled).toEqual({ id, status: "scheduled", sendAt, entity: { id: "ada" }, requestedAt: expect.any(String) });
  expect((await listScheduled()).map((n: { id: string }) => n.id)).toContain(id);

  // Early by construction: the job runs now; the bot waits for sendAt and sends nothing.
  await runJobNow(id);
  await waitFor(async () => ((await handlingOf(id)) === "AvailableAfterSelfCancellation" ? true : undefined), { what: "the early run to wait" });
  expect(await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [id] })).toEqual([]);
  expect(mailsWith("Tomorrow's digest")).toEqual([]);
  expect((await getView(id)).json).toMatchObject({ status: "scheduled", sendAt });

  // Restart: new workers whose clock is past sendAt; the schedule was kept in the database.
  await app.worker!.stop();
  await startWorkers(DAY + 60_000);
  await runJobNow(id);
  const outcome = await waitForOutcome(app.t, id);
  expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
  expect(mailsWith("Tomorrow's digest")).toHaveLength(1);
  // Sent: the view says so, and still for when it was scheduled; the list of scheduled ones no longer has it.
  const sent = await waitFor(
    async () => {
      const v = (await getView(id)).json;
      return v.status === "sent" ? v : undefined;
    },
    { what: "the sent view" },
  );
  expect(sent.sendAt).toBe(sendAt);
  // requestedAt stays the time of the request, not the time it was sent.
  expect(sent.requestedAt).toBe(scheduled.requestedAt);
  expect((await listScheduled()).map((n: { id: string }) => n.id)).not.toContain(id);
  // Cancelling after the send is too late.
  const late = await api.call("POST", `/v1/notifications/${id}/cancel`, { key: keys.producer });
  expect(late.status).toBe(409);
  expect(late.json.detail).toMatch(/already sent/);
  await app.worker!.stop();
  app.worker = null;
});

it("a cancel before the time ends it as cancelled, with no alert, and the job sends nothing when it runs", async () => {
  await startWorkers(0);
  const answer = await send({ entityId: "ada", subject: "Cancelled digest", text: "Never sent.", delay: "P1D" });
  const id = answer.json.id as string;
  const sendAt = ((await clientOp(id)).payload as { sendAt: string }).sendAt;
  expect(Date.parse(sendAt) - Date.now()).toBeGreaterThan(DAY - 60_000);
  const scheduled = (await getView(id)).json;
  expect(scheduled).toMatchObject({ status: "scheduled", sendAt });

  const cancel = await api.call("POST", `/v1/notifications/${id}/cancel`, { key: keys.producer });
  expect(cancel.status).toBe(200);
  expect(cancel.json).toMatchObject({ id, status: "cancelled" });
  const view = await waitFor(
    async () => {
      const v = (await api.call("GET", `/v1/notifications/${id}`, { key: keys.reader })).json;
      return v.status === "cancelled" ? v : undefined;
    },
    { what: "the cancelled view" },
  );
  expect(view.outcome).toMatchObject({ type: "NotificationCancelledEvent" });
  expect(view.sendAt).toBe(sendAt);
  expect(view.requestedAt).toBe(scheduled.requestedAt);
  // Ended for retention too: a cancelled notification holds no partition and no idempotency key.
  expect((await app.t.query("select notification.open_notifications(array[$1]) as open", [id])).rows[0].open).toEqual([]);
  expect((await listScheduled()).map((n: { id: string }) => n.id)).not.toContain(id);

  // Even if its job runs (now, or past its time), nothing is sent.
  await app.worker!.stop();
  await startWorkers(DAY + 60_000);
  await runJobNow(id);
  await waitFor(async () => ((await handlingOf(id)) === "Completed" ? true : undefined), { what: "the job of the cancelled notification" });
  expect(await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [id] })).toEqual([]);
  expect(mailsWith("Cancelled digest")).toEqual([]);
  expect(await findRecords(app.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);

  const again = await api.call("POST", `/v1/notifications/${id}/cancel`, { key: keys.producer });
  expect(again.status).toBe(409);
  expect(again.json.detail).toMatch(/already cancelled/);
});

it("refuses sendAt with delay, a bad duration, and cancelling a notification that was not scheduled", async () => {
  const both = await send({ entityId: "ada", subject: "x", text: "y", sendAt: new Date().toISOString(), delay: "PT1M" });
  expect(both.status).toBe(400);
  expect(both.json.errors.map((e: { path: string }) => e.path)).toEqual(["delay"]);
  const bad = await send({ entityId: "ada", subject: "x", text: "y", delay: "1 day" });
  expect(bad.json.errors[0].path).toBe("delay");
  const now = await send({ entityId: "ada", subject: "Right away", text: "y" });
  const refused = await api.call("POST", `/v1/notifications/${now.json.id}/cancel`, { key: keys.producer });
  expect(refused.status).toBe(409);
  expect(refused.json.detail).toMatch(/not scheduled/);
  expect((await api.call("POST", "/v1/notifications/00000000-0000-4000-8000-000000000000/cancel", { key: keys.producer })).status).toBe(404);
});

/** How many sessions wait for this notification's lock (pg_locks: an advisory bigint key is classid, then objid). */
const waitingForLock = async (id: string) => {
  const { rows } = await app.t.query<{ n: number }>(
    `select count(*)::int as n from pg_locks
     where locktype = 'advisory' and not granted and ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0)`,
    [`notification ${id}`],
  );
  return rows[0]!.n;
};

// PostgreSQL grants a lock to its waiters in the order they came, so which one queued first decides: both orders are tried.
it.each(["cancel", "send"] as const)("a cancel and the due send at once (%s queued first on the notification's lock): exactly one of them happens", async (first) => {
  // Workers for whom the notification is due, so its job sends when it runs.
  await app.worker?.stop();
  await startWorkers(DAY + 60_000);
  const subject = `Raced digest, ${first} first`;
  const answer = await send({ entityId: "ada", subject, text: "Cancelled or sent, not both.", delay: "P1D" });
  const id = answer.json.id as string;

  // Collide by construction: hold the notification's lock, start both (one queued before the other), see both wait, release.
  const holder = await app.t.adminPool.connect();
  let cancelling: Promise<{ status: number; json: any }> | undefined;
  try {
    await holder.query("begin");
    await holder.query("select pg_advisory_xact_lock(hashtextextended($1, 0))", [`notification ${id}`]);
    // The cancel's answer is awaited after the release (it waits for the lock); the job is only made due.
    const start = {
      cancel: async () => {
        cancelling = api.call("POST", `/v1/notifications/${id}/cancel`, { key: keys.producer });
      },
      send: () => runJobNow(id),
    };
    await start[first]();
    await waitFor(async () => ((await waitingForLock(id)) === 1 ? true : undefined), { what: `the ${first} waiting for the notification's lock` });
    await start[first === "cancel" ? "send" : "cancel"]();
    await waitFor(async () => ((await waitingForLock(id)) === 2 ? true : undefined), { what: "the cancel and the send both waiting for the lock" });
  } finally {
    await holder.query("rollback");
    holder.release();
  }
  const cancel = await cancelling!;
  // The job ends either way: it sent, or found the notification cancelled.
  await waitFor(async () => ((await handlingOf(id)) === "Completed" ? true : undefined), { what: "the notification's job to end" });

  const events = (await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [id] })).map((e) => e.type);
  const emailOps = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [id] });
  if (first === "cancel") {
    // Cancelled, and nothing prepared or sent.
    expect(cancel.status).toBe(200);
    expect(events).toEqual(["SendNotificationRequestedEvent", "NotificationCancelledEvent"]);
    expect(emailOps).toEqual([]);
    expect(mailsWith(subject)).toEqual([]);
  } else {
    // Sent once, and the cancel is too late.
    expect(cancel).toMatchObject({ status: 409, json: { detail: expect.stringMatching(/already sent/) } });
    const outcome = await waitForOutcome(app.t, id);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    expect(events).not.toContain("NotificationCancelledEvent");
    expect(emailOps).toHaveLength(1);
    await waitFor(async () => (mailsWith(subject).length === 1 ? true : undefined), { what: "the one email" });
  }
  expect(events.filter((e) => e === "SendNotificationRequestedEvent")).toHaveLength(1);
  await app.worker!.stop();
  app.worker = null;
});
