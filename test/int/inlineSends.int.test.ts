/**
 * Inline sends (ExternalBot.sendsInline): the notification bot's transaction
 * claims the channel operations it writes, as the channel bots, and its
 * process sends them as soon as it commits, with no job of their own. And the
 * other half of the promise: a claim whose process will not record an
 * outcome (it stopped heart-beating, or its own recording failed) is handed
 * over after the lease, while a claim of a live process is never touched.
 */
import { sql } from "kysely";
import type { Bot, BotRuntime, ExternalBot } from "../../src/bots/bot";
import { handleBatch, inlineSendersOf } from "../../src/bots/runner";
import { allBots, type BotDeps } from "../../src/composition";
import { createInlineSends, recoverInlineClaims } from "../../src/bots/inline";
import { inTransaction } from "../../src/db/database";
import { enqueueNotification } from "../../src/notification/enqueue";
import { Streams } from "../../src/notification/streams";
import { append } from "../../src/streams/append";
import { claimManyWithRecords, getHandling, getHistory } from "../../src/streams/handling";
import { findRecords } from "../../src/streams/read";
import { createTestDatabase, declareTestStream, type TestDatabase } from "../helpers/db";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { testLogger } from "../helpers/worker";

describe("a notification's channel operations", () => {
  let app: Tidings;
  beforeAll(async () => {
    app = await startTidings();
  });
  afterAll(async () => {
    await app.stop();
  });

  it("are claimed in the transaction that wrote them, by the channel bots, sent without a job of their own, and their successes recorded together", async () => {
    await createEntity(app.t, "ines", person({ email: "ines@example.com", slack: "U0INES", preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all" } }));
    const jobIds = async () =>
      Number(
        (await sql<{ n: string }>`select (pg_sequence_last_value(pg_get_serial_sequence('graphile_worker._private_jobs', 'id')::regclass))::text as n`.execute(app.t.adminDb))
          .rows[0]!.n,
      );
    const jobsBefore = await jobIds();
    const { trackingId } = await enqueueNotification(app.t.db, { entityId: "ines", subject: "Inline", text: "Sent as the notification bot commits." });
    expect((await waitForOutcome(app.t, trackingId)).type).toBe("SentOnAllPreparedChannelsEvent");
    const processId = app.worker!.processId;

    const [prepared] = await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [trackingId], types: ["PreparedToSendOnAllChannelsEvent"] });
    for (const [operations, events, concern, requested] of [
      [Streams.emailOperations, Streams.emailEvents, "email_bot", "SendEmailRequestedEvent"],
      [Streams.slackOperations, Streams.slackEvents, "slack_bot", "SendSlackMessageRequestedEvent"],
    ] as const) {
      const [op] = await findRecords(app.t.adminDb, operations, { ids: [trackingId] });
      const history = await getHistory(app.t.adminDb, operations, op!.position, concern);
      expect(history.map((h) => `${h.action}:${h.toStatus}:${h.actor}`)).toEqual([`claim:Running:${concern}`, `complete:Completed:${concern}`]);
      expect(history[0]!.reason).toBe(`claimed by inline:${processId}`);
      // Claimed and prepared (its Requested event) in the very transaction that prepared the notification.
      const [req] = await findRecords(app.t.adminDb, events, { ids: [trackingId], types: [requested] });
      expect(req!.txId).toBe(prepared!.txId);
      expect(op!.txId).toBe(prepared!.txId);
    }
    // Both sends' successes were recorded in one transaction, with the outcome the saga wrote on hearing of them.
    const [emailSent] = await findRecords(app.t.adminDb, Streams.emailEvents, { ids: [trackingId], types: ["SucceededInSendingEmailEvent"] });
    const [slackSent] = await findRecords(app.t.adminDb, Streams.slackEvents, { ids: [trackingId], types: ["SucceededInSendingSlackMessageEvent"] });
    const [outcome] = await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [trackingId], types: ["SentOnAllPreparedChannelsEvent"] });
    expect(slackSent!.txId).toBe(emailSent!.txId);
    expect(outcome!.txId).toBe(emailSent!.txId);
    const [{ n }] = (
      await sql<{ n: number }>`select count(*)::int as n from graphile_worker.jobs where task_identifier in ('email.operations:email_bot', 'slack.operations:slack_bot')`.execute(
        app.t.adminDb,
      )
    ).rows as [{ n: number }];
    expect(n).toBe(0);
    // Jobs ever queued for it: the client operation's and the saga deadline's; none for either send.
    expect((await jobIds()) - jobsBefore).toBe(2);
  });
});

describe("the bound on inline sends", () => {
  let app: Tidings;
  beforeAll(async () => {
    app = await startTidings({ autoStart: false });
    await createEntity(app.t, "otto", person({ email: "otto@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
  });
  afterAll(async () => {
    await app.stop();
  });

  /** Handle one client operation with the runner's pipeline, as a process already sending `inFlight` emails inline. */
  const handleWithEmailsInFlight = async (inFlight: number) => {
    const { trackingId } = await enqueueNotification(app.t.db, { entityId: "otto", subject: "Bound", text: "Hello." });
    const [op] = await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [trackingId] });
    const bots = allBots();
    const notificationBot = bots.find((b) => b.kind === "transactional" && b.concern === "notification_bot") as Bot<BotDeps>;
    const inline = createInlineSends("44444444-4444-4444-8444-444444444444");
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    inline
      .reserve(
        Streams.emailOperations,
        "email_bot",
        Array.from({ length: inFlight }, (_, i) => -1 - i),
      )
      .until(held);
    const runtime: BotRuntime<BotDeps> = { db: app.t.db, deps: app.deps, logger: testLogger, settings: { maxAttempts: 3, retryBaseMs: 10, retryMaxMs: 100 }, inline };
    await handleBatch(notificationBot, runtime, [{ position: op!.position, jobTag: "job test" }], [], inlineSendersOf(notificationBot, bots));
    release();
    await inline.settled();
    const [email] = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [trackingId] });
    const state = await getHandling(app.t.adminDb, Streams.emailOperations, email!.position, "email_bot");
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from graphile_worker.jobs where key = ${`email.operations:email_bot:${email!.position}`}`.execute(
      app.t.adminDb,
    );
    return { status: state.status, lastActor: state.lastActor, jobs: rows[0]!.n };
  };

  it("sends inline while the process sends fewer than 256 of the channel's records; past that, the operation waits for its job", async () => {
    // Sent inline, completed; no job.
    expect(await handleWithEmailsInFlight(255)).toEqual({ status: "Completed", lastActor: "email_bot", jobs: 0 });
    // Not claimed: its job is queued, as before inline sends.
    expect(await handleWithEmailsInFlight(256)).toEqual({ status: "AvailableByDefault", lastActor: "none", jobs: 1 });
  });
});

describe("recoverInlineClaims", () => {
  let t: TestDatabase;
  const stream = "testing.inline_sends";
  const bot: ExternalBot<unknown, void> = {
    kind: "external",
    stream,
    concern: "inline_sender",
    actor: "inline_sender",
    sendsInline: true,
    async perform() {},
    async succeeded() {},
  };
  /** How much older than the fresh claim the others are: the lease each check uses falls inside this gap. */
  const GAP_MS = 2_500;
  beforeAll(async () => {
    t = await createTestDatabase();
    await declareTestStream(t.adminDb, { stream, producer: "test_producer", consumer: "inline_sender" });
  });
  afterAll(async () => {
    await t.close();
  });

  it("hands over the claims of a dead or crashed process and this process's claims it no longer sends; leaves a live process's, fresh ones and those in flight", async () => {
    const me = "11111111-1111-4111-8111-111111111111";
    const live = "22222222-2222-4222-8222-222222222222";
    const dead = "33333333-3333-4333-8333-333333333333";
    const stale = "55555555-5555-4555-8555-555555555555";
    const owners = { mineSending: me, mineLost: me, live, dead, stale, fresh: dead };
    const positions = await inTransaction(t.db, "test_producer", (tx) =>
      append(
        tx,
        stream,
        Object.keys(owners).map((id) => ({ id, type: "Thing", payload: {} })),
      ),
    );
    // Their jobs went to a worker that claimed them inline, as far as this test goes: none is left.
    await sql`delete from graphile_worker._private_jobs`.execute(t.adminDb);
    const at = Object.fromEntries(Object.keys(owners).map((id, i) => [id, positions[i]!.position])) as Record<keyof typeof owners, number>;
    const claimAs = (names: Array<keyof typeof owners>) =>
      inTransaction(t.db, "inline_sender", (tx) =>
        claimManyWithRecords(
          tx,
          { stream, concern: "inline_sender" },
          names.map((name) => ({ position: at[name], claimedBy: `inline:${owners[name]}` })),
          "inline_sender",
        ),
      );
    await claimAs(["mineSending", "mineLost", "live", "dead", "stale"]);
    // These five are GAP_MS older than the fresh claim made next.
    await new Promise((resolve) => setTimeout(resolve, GAP_MS));
    await claimAs(["fresh"]);
    // The live process heart-beats now; the dead one never did; the stale one last did longer ago than the lease (a crash).
    await sql`insert into tidings.worker_heartbeats (process_id, worker_ids, hostname, pid) values (${live}, '{}', 'elsewhere', 1)`.execute(t.db);
    await sql`insert into tidings.worker_heartbeats (process_id, worker_ids, hostname, pid, heartbeat_at)
              values (${stale}, '{}', 'crashed', 2, now() - interval '1 hour')`.execute(t.adminDb);

    const inline = createInlineSends(me);
    let finish!: () => void;
    inline.reserve(stream, "inline_sender", [at.mineSending]).until(new Promise<void>((resolve) => (finish = resolve)));

    // The lease of each check: the fresh claim's age plus half the gap, so the fresh claim is younger than the lease
    // and the others (at least GAP_MS older) are older than it, however long the machine took to get here.
    const lease = async () => {
      const { rows } = await sql<{ ms: number }>`
        select (extract(epoch from now() - updated_at) * 1000)::float8 as ms from testing.inline_sends__handling where position = ${at.fresh}`.execute(t.adminDb);
      return Math.round(rows[0]!.ms + GAP_MS / 2);
    };
    expect(await recoverInlineClaims(t.db, [bot as ExternalBot<unknown, unknown>], inline, await lease())).toBe(3);
    const status = async (name: keyof typeof owners) => (await getHandling(t.adminDb, stream, at[name], "inline_sender")).status;
    expect(await status("mineSending")).toBe("Running");
    expect(await status("live")).toBe("Running");
    expect(await status("fresh")).toBe("Running");
    expect(await status("mineLost")).toBe("AvailableAfterExternalCancellation");
    expect(await status("dead")).toBe("AvailableAfterExternalCancellation");
    expect(await status("stale")).toBe("AvailableAfterExternalCancellation");
    const reasons = async (name: keyof typeof owners) => (await getHistory(t.adminDb, stream, at[name], "inline_sender")).map((h) => h.reason);
    expect((await reasons("dead"))[1]).toBe(`attempt 1 by inline:${dead} was abandoned before recording an outcome (that process stopped heart-beating); handling again`);
    expect((await reasons("mineLost"))[1]).toBe(`attempt 1 by inline:${me} was abandoned before recording an outcome (this process could not record it); handling again`);
    // Each handed-over record has its job again.
    const { rows: jobs } = await sql<{ key: string }>`select key from graphile_worker.jobs where task_identifier = ${`${stream}:inline_sender`} order by key`.execute(t.adminDb);
    expect(jobs.map((j) => j.key).sort()).toEqual([at.dead, at.mineLost, at.stale].map((p) => `${stream}:inline_sender:${p}`).sort());

    // Once this process is done with it, its own claim is handed over too, if still Running.
    finish();
    await inline.settled();
    expect(await recoverInlineClaims(t.db, [bot as ExternalBot<unknown, unknown>], inline, await lease())).toBe(1);
    expect(await status("mineSending")).toBe("AvailableAfterExternalCancellation");
  });
});
