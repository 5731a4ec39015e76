import { runScript } from "../../helpers/scripts";
import { findStuck, listRecords, runAction, switchStream } from "../../../src/admin/redrive";
import { inTransaction } from "../../../src/db/database";
import { NotFoundError, ValidationError } from "../../../src/errors/errors";
import { enqueueNotification } from "../../../src/notification/enqueue";
import { getHandling, getHistory, transition } from "../../../src/streams/handling";
import type { StreamRecord } from "../../../src/streams/interfaces";
import { Streams } from "../../../src/notification/streams";
import { findRecords, getLatestById } from "../../../src/streams/read";
import { outcomeOf, settledThen, startRules, whenSettled, type Rules } from "../../helpers/given";
import { OUTCOME_TYPES, createEntity, person } from "../../helpers/tidings";

/**
 * The re-drive tool's rules, given/when/then (test/helpers/given.ts): the
 * bots run through the runner's pipeline when the workflow settles, with no
 * workers. What needs real time stays in test/int/redrive.int.test.ts.
 */
let app: Rules;
beforeAll(async () => {
  app = await startRules();
});
afterAll(async () => {
  await app.stop();
});
beforeEach(() => {
  app.smtp.reset();
  app.slack.reset();
});

let entities = 0;

/** A notification to a new entity on email and Slack whose Slack send failed for good (channel_not_found). */
async function failedSlackNotification(name: string) {
  entities += 1;
  const entityId = `${name}-${entities}`;
  const email = `${entityId}@example.com`;
  const slack = `U0RD${String(entities).padStart(5, "0")}`;
  await createEntity(app.t, entityId, person({ email, slack }));
  app.slack.failNext(1, { kind: "slackError", error: "channel_not_found" });
  const { trackingId } = await enqueueNotification(app.t.db, { entityId, subject: "Quarterly report", text: "It is ready." });
  const outcome = await settledOutcome(trackingId);
  expect(outcome.type).toBe("SentOnSomePreparedChannelsEvent");
  const [op] = await findRecords(app.t.adminDb, Streams.slackOperations, { ids: [trackingId] });
  const target = { stream: Streams.slackOperations, position: op!.position, concern: "slack_bot" };
  expect((await getHandling(app.t.adminDb, target.stream, target.position, target.concern)).status).toBe("Failed");
  return { entityId, email, slack, trackingId, target };
}

async function handlingSnapshot(stream: string, position: number) {
  const handling = await app.t.query(`select * from ${stream}__handling where position = $1 order by concern`, [position]);
  const history = await app.t.query(`select * from ${stream}__handling_history where position = $1 order by entry`, [position]);
  return { handling: handling.rows, history: history.rows };
}

async function latestOutcome(id: string): Promise<StreamRecord | undefined> {
  return getLatestById(app.t.adminDb, Streams.notificationEvents, id, { types: OUTCOME_TYPES });
}

async function settledView(id: string, status: string) {
  return settledThen(
    app,
    async () => {
      const view = await getLatestById(app.t.adminDb, Streams.notificationViews, id);
      return view && (view.payload as { status: string }).status === status ? view : undefined;
    },
    `the view of ${id} to say ${status}`,
  );
}

/** When the workflow settles, then the notification's outcome. */
const settledOutcome = (id: string) => settledThen(app, () => outcomeOf(app, id), `the outcome of notification ${id}`);

const runCli = (args: string[]) => runScript("redrive", args, { DATABASE_URL: app.t.url, LOG_LEVEL: "warn" });

describe("redrive", () => {
  it("dry run: reports the would-be change and changes nothing", async () => {
    const n = await failedSlackNotification("dry");
    const before = await handlingSnapshot(n.target.stream, n.target.position);

    const report = await runAction(app.t.db, "redrive-failed", { notification: n.trackingId, concern: "slack_bot" });

    expect(report).toMatchObject({ verb: "redrive-failed", dryRun: true, matched: 1, selected: 1, changed: 0, queued: 0 });
    expect(report.changes).toEqual([
      expect.objectContaining({
        stream: "slack.operations",
        position: n.target.position,
        id: n.trackingId,
        type: "SendSlackMessageOp",
        concern: "slack_bot",
        status: "Failed",
        to: "AvailableAfterFailure",
        requeue: true,
        outcome: "would change",
        lastError: expect.stringContaining("channel_not_found"),
      }),
    ]);
    // A reason without --execute is still a dry run.
    await runAction(app.t.db, "redrive-failed", { notification: n.trackingId, concern: "slack_bot" }, { reason: "only looking" });
    expect(await handlingSnapshot(n.target.stream, n.target.position)).toEqual(before);
  });

  it("re-drives a failed Slack send once Slack recovers: delivered, new outcome, view sent, lineage in the history", async () => {
    const n = await failedSlackNotification("ada");
    await settledThen(app, async () => app.smtp.messages.some((m) => m.to.includes(n.email)), "the first email");
    const failEntry = (await getHistory(app.t.adminDb, n.target.stream, n.target.position, "slack_bot")).filter((h) => h.action === "fail").at(-1)!;

    const report = await runAction(
      app.t.db,
      "redrive-failed",
      { notification: n.trackingId, concern: "slack_bot" },
      { execute: true, reason: "the Slack channel exists again", actor: "alice" },
    );
    expect(report).toMatchObject({ dryRun: false, selected: 1, changed: 1, failed: 0, queued: 1, actor: "alice" });

    const post = await settledThen(app, async () => app.slack.posts.find((p) => p.requestedChannel === n.slack), "the re-driven Slack post");
    expect(post.text).toContain("It is ready.");
    const success = await settledThen(
      app,
      () => getLatestById(app.t.adminDb, Streams.slackEvents, n.trackingId, { type: "SucceededInSendingSlackMessageEvent" }),
      "SucceededInSendingSlackMessageEvent",
    );
    expect(success.payload).toMatchObject({ attempt: 2 });
    const outcome = await settledThen(
      app,
      async () => {
        const latest = await latestOutcome(n.trackingId);
        return latest?.type === "SentOnAllPreparedChannelsEvent" ? latest : undefined;
      },
      "the new outcome",
    );
    expect(outcome.payload).toMatchObject({ sent: expect.arrayContaining(["email", "slack"]), failed: [] });
    const view = await settledView(n.trackingId, "sent");
    expect(view.payload).toMatchObject({ outcome: { type: "SentOnAllPreparedChannelsEvent" } });

    const history = await getHistory(app.t.adminDb, n.target.stream, n.target.position, "slack_bot");
    const reset = history.find((h) => h.action === "reset_failed" && h.actor === "alice")!;
    expect(reset).toMatchObject({
      fromStatus: "Failed",
      toStatus: "AvailableAfterFailure",
      reason: "the Slack channel exists again",
      details: {
        tool: "redrive",
        verb: "redrive-failed",
        redriveOf: { attempt: 1, historyEntry: failEntry.entry, lastError: expect.stringContaining("channel_not_found") },
      },
    });
    const after = history.filter((h) => h.entry > reset.entry).map((h) => [h.action, h.attempt]);
    expect(after).toEqual([
      ["claim", 2],
      ["complete", 2],
    ]);
    // Only Slack was sent again: the entity still has exactly one email.
    expect(app.smtp.messages.filter((m) => m.to.includes(n.email))).toHaveLength(1);
    const [emailOp] = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [n.trackingId] });
    expect(await getHandling(app.t.adminDb, Streams.emailOperations, emailOp!.position, "email_bot")).toMatchObject({ status: "Completed", attempts: 1 });
  });

  it("refuses to act without a reason", async () => {
    const n = await failedSlackNotification("ref");
    const before = await handlingSnapshot(n.target.stream, n.target.position);
    const selection = { notification: n.trackingId, concern: "slack_bot" };

    await expect(runAction(app.t.db, "redrive-failed", selection, { execute: true })).rejects.toThrow(/without a reason.*--reason/);
    await expect(runAction(app.t.db, "redrive-failed", selection, { execute: true, reason: "   " })).rejects.toBeInstanceOf(ValidationError);
    expect(await handlingSnapshot(n.target.stream, n.target.position)).toEqual(before);
  });

  it("refuses to re-drive completed work without the explicit flag, but previews it", async () => {
    // Delivered on its only channel: no alert, so the notification has one email operation.
    await createEntity(app.t, "done-dora", person({ email: "dora@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    const { trackingId } = await enqueueNotification(app.t.db, { entityId: "done-dora", subject: "Done", text: "Delivered once." });
    expect((await settledOutcome(trackingId)).type).toBe("SentOnAllPreparedChannelsEvent");
    await settledThen(app, async () => app.smtp.messages.some((m) => m.to.includes("dora@example.com")), "the email");
    const [emailOp] = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [trackingId] });
    const before = await handlingSnapshot(Streams.emailOperations, emailOp!.position);
    const completed = { notification: trackingId, concern: "email_bot" };

    await expect(runAction(app.t.db, "redrive-completed", completed, { execute: true, reason: "resend" })).rejects.toThrow(/--i-know-it-was-completed/);
    // The dry run shows what it would do, and says the flag is needed.
    const preview = await runAction(app.t.db, "redrive-completed", completed);
    expect(preview).toMatchObject({
      dryRun: true,
      selected: 1,
      changes: [expect.objectContaining({ position: emailOp!.position, status: "Completed", to: "AvailableAfterCompletion", requeue: true })],
    });
    expect(preview.warnings.join(" ")).toContain("--i-know-it-was-completed");
    expect(await handlingSnapshot(Streams.emailOperations, emailOp!.position)).toEqual(before);
    expect(app.smtp.messages.filter((m) => m.to.includes("dora@example.com"))).toHaveLength(1);
  });

  it("names unknown or wrong filters", async () => {
    await expect(runAction(app.t.db, "redrive-failed", { stream: "slack.nothing" })).rejects.toThrow(/unknown stream "slack\.nothing"/);
    await expect(runAction(app.t.db, "redrive-failed", { concern: "pigeon_bot" })).rejects.toThrow(/unknown concern "pigeon_bot"/);
    await expect(runAction(app.t.db, "redrive-failed", { concern: "pigeon_bot" })).rejects.toBeInstanceOf(NotFoundError);
    await expect(runAction(app.t.db, "redrive-failed", { stream: "email.operations", concern: "slack_bot" })).rejects.toThrow(
      /concern "slack_bot" does not consume stream "email\.operations"/,
    );
    const invalid = await runAction(app.t.db, "cancel-running", { olderThan: "ten minutes", since: "yesterday", limit: "0", status: ["Failed"] }).catch((e: unknown) => e);
    expect(invalid).toBeInstanceOf(ValidationError);
    expect((invalid as ValidationError).issues.map((i) => i.path).sort()).toEqual(["limit", "olderThan", "since", "status"]);
    await expect(listRecords(app.t.db, { status: ["Broken"] })).rejects.toThrow(/unknown status "Broken"/);
  });

  it("archives a failure: it no longer waits for an operator and cannot be re-driven", async () => {
    const n = await failedSlackNotification("arch");
    expect((await findStuck(app.t.db, { notification: n.trackingId })).failed.records).toHaveLength(1);

    const report = await runAction(
      app.t.db,
      "archive-failed",
      { notification: n.trackingId, concern: "slack_bot" },
      { execute: true, reason: "channel deleted for good", actor: "carol" },
    );
    expect(report).toMatchObject({ changed: 1, queued: 0 });
    expect((await getHandling(app.t.adminDb, n.target.stream, n.target.position, "slack_bot")).status).toBe("ArchivedAfterFailure");
    expect((await findStuck(app.t.db, { notification: n.trackingId })).failed.records).toEqual([]);
    expect((await runAction(app.t.db, "redrive-failed", { notification: n.trackingId })).selected).toBe(0);
    const listed = await listRecords(app.t.db, { notification: n.trackingId, status: ["ArchivedAfterFailure"] });
    expect(listed.records.map((r) => [r.stream, r.concern, r.lastActor])).toEqual([["slack.operations", "slack_bot", "carol"]]);
  });

  it("acts in batches and reports a record someone else changed meanwhile, carrying on with the rest", async () => {
    // The database's clock, as recorded_at is.
    const start = (await app.t.query<{ now: Date }>("select now() as now")).rows[0]!.now;
    const first = await failedSlackNotification("batch");
    const second = await failedSlackNotification("batch");
    const seen: number[] = [];
    const report = await runAction(
      app.t.db,
      "archive-failed",
      { concern: "slack_bot", errorContains: "CHANNEL_NOT_FOUND", recordedSince: start, types: ["SendSlackMessageOp"] },
      {
        execute: true,
        reason: "clean-up",
        batchSize: 1,
        onProgress: async (p) => {
          seen.push(p.done);
          // Between the batches, another operator re-drives the last record.
          if (p.done === 1) {
            await inTransaction(app.t.db, "operator", (tx) => transition(tx, second.target, "reset_failed", { actor: "dave", reason: "re-driving it myself" }));
          }
        },
      },
    );
    expect(report.changes.map((c) => [c.id, c.outcome])).toEqual([
      [first.trackingId, "changed"],
      [second.trackingId, "failed"],
    ]);
    expect(report).toMatchObject({ selected: 2, changed: 1, failed: 1 });
    expect(report.changes[1]!.error).toMatch(/cannot archive_failure .* current status is AvailableAfterFailure/);
    expect(seen).toEqual([1, 2]);
    expect((await getHandling(app.t.adminDb, first.target.stream, first.target.position, "slack_bot")).status).toBe("ArchivedAfterFailure");
    expect((await getHandling(app.t.adminDb, second.target.stream, second.target.position, "slack_bot")).lastActor).toBe("dave");
    // Dave's record waits again (the handling sweep would queue it): it is handled here, not in the next test.
    await whenSettled(app);
  });

  it("selects by entity: the records of notifications to that entity only", async () => {
    const mine = await failedSlackNotification("ent");
    const other = await failedSlackNotification("ent");
    const listed = await listRecords(app.t.db, { entity: mine.entityId });
    const ids = new Set(listed.records.map((r) => r.id));
    expect(ids.has(mine.trackingId)).toBe(true);
    expect(ids.has(other.trackingId)).toBe(false);
    // The client operation, the notification events and the channel operations all belong to it.
    const streams = new Set(listed.records.map((r) => r.stream));
    for (const s of [Streams.notificationClientOperations, Streams.notificationEvents, Streams.slackOperations, Streams.emailOperations]) expect(streams.has(s)).toBe(true);
    const failed = await listRecords(app.t.db, { entity: mine.entityId, status: ["Failed"] });
    expect(failed.records.map((r) => [r.stream, r.concern, r.id])).toEqual([["slack.operations", "slack_bot", mine.trackingId]]);
    expect((await listRecords(app.t.db, { entity: mine.entityId, since: new Date(Date.now() + 60_000) })).records).toEqual([]);
  });

  it("disables and enables a stream for a concern: waiting records resume when enabled", async () => {
    await createEntity(app.t, "dis-dan", person({ slack: "U0DIS0001", preferences: { channels: ["slack"], optedOut: [], delivery: "all" } }));
    const preview = await switchStream(app.t.db, true, { concern: "slack_bot" });
    expect(preview).toMatchObject({ dryRun: true, switches: [{ stream: "slack.operations", concern: "slack_bot", wasDisabled: false, changes: true }] });
    expect((await listRecords(app.t.db, { stream: "slack.operations", status: ["DisabledForStream"] })).records).toEqual([]);
    await expect(switchStream(app.t.db, true, { concern: "slack_bot" }, { execute: true })).rejects.toThrow(/without a reason/);

    const disabled = await switchStream(app.t.db, true, { concern: "slack_bot" }, { execute: true, reason: "Slack outage", actor: "erin" });
    try {
      expect(disabled.switches[0]).toMatchObject({ changes: true });
      const { trackingId } = await enqueueNotification(app.t.db, { entityId: "dis-dan", subject: "While off", text: "Waits." });
      const waiting = await settledThen(
        app,
        async () => {
          const r = await listRecords(app.t.db, { notification: trackingId, concern: "slack_bot" });
          return r.records.length === 1 ? r.records[0] : undefined;
        },
        "the Slack operation",
      );
      expect(waiting).toMatchObject({ status: "DisabledForStream", streamDisabled: true });

      const enabled = await switchStream(app.t.db, false, { concern: "slack_bot", stream: "slack.operations" }, { execute: true, reason: "Slack is back", actor: "erin" });
      expect(enabled.switches[0]).toMatchObject({ wasDisabled: true, disabled: false, changes: true });
      expect(enabled.switches[0]!.requeued).toBeGreaterThanOrEqual(1);
      await settledThen(app, async () => app.slack.posts.find((p) => p.requestedChannel === "U0DIS0001"), "the post after enabling");
      expect((await settledOutcome(trackingId)).type).toBe("SentOnAllPreparedChannelsEvent");
      const { rows } = await app.t.query("select disabled, changed_by, reason from tidings.stream_concern_history where concern = 'slack_bot' order by entry");
      expect(rows).toEqual([
        { disabled: true, changed_by: "erin", reason: "Slack outage" },
        { disabled: false, changed_by: "erin", reason: "Slack is back" },
      ]);
    } finally {
      // Leave Slack on for the other tests even when an assertion above failed (a no-op when it is on).
      await switchStream(app.t.db, false, { concern: "slack_bot" }, { execute: true, reason: "test clean-up", actor: "erin" });
    }
  });

  describe("the command line", () => {
    it("prints usage with --help", async () => {
      const top = await runCli(["--help"]);
      expect(top.code).toBe(0);
      expect(top.stdout).toContain("Usage: redrive");
      for (const verb of ["redrive-failed", "redrive-completed", "cancel-running", "archive-failed", "disable-stream", "enable-stream", "stuck", "list"]) {
        expect(top.stdout).toContain(verb);
      }
      const verb = await runCli(["redrive-failed", "--help"]);
      expect(verb.code).toBe(0);
      expect(verb.stdout).toContain("--notification <id>");
      expect(verb.stdout).toContain("--older-than <duration>");
      expect(verb.stdout).toContain("Examples:");
    }, 60_000);

    it("dry-runs, refuses without a reason, then re-drives with --execute --reason", async () => {
      const n = await failedSlackNotification("cli");
      const selection = ["--notification", n.trackingId, "--concern", "slack_bot"];

      const dry = await runCli(["redrive-failed", ...selection, "--json"]);
      expect(dry.code).toBe(0);
      const planned = JSON.parse(dry.stdout);
      expect(planned).toMatchObject({ dryRun: true, selected: 1, changes: [{ id: n.trackingId, status: "Failed", to: "AvailableAfterFailure" }] });
      const human = await runCli(["redrive-failed", ...selection]);
      expect(human.stdout).toContain("DRY RUN: nothing was changed. 1 record would change");
      expect(human.stdout).toContain("Failed → AvailableAfterFailure");
      expect((await getHandling(app.t.adminDb, n.target.stream, n.target.position, "slack_bot")).status).toBe("Failed");

      const refused = await runCli(["redrive-failed", ...selection, "--execute"]);
      expect(refused.code).toBe(2);
      expect(refused.stderr).toContain("--reason");
      expect((await getHandling(app.t.adminDb, n.target.stream, n.target.position, "slack_bot")).status).toBe("Failed");

      const done = await runCli(["redrive-failed", ...selection, "--execute", "--reason", "channel re-created", "--actor", "cli-op", "--json"]);
      expect(done.code).toBe(0);
      expect(JSON.parse(done.stdout)).toMatchObject({ dryRun: false, changed: 1, queued: 1, actor: "cli-op", reason: "channel re-created" });
      expect(done.stderr).toContain("progress: 1/1");
      await settledThen(app, async () => app.slack.posts.find((p) => p.requestedChannel === n.slack), "the re-driven post");
      await settledThen(app, async () => (await latestOutcome(n.trackingId))?.type === "SentOnAllPreparedChannelsEvent", "the new outcome");
      const reset = (await getHistory(app.t.adminDb, n.target.stream, n.target.position, "slack_bot")).find((h) => h.action === "reset_failed" && h.actor === "cli-op");
      expect(reset).toMatchObject({ reason: "channel re-created", details: { redriveOf: { attempt: 1 } } });

      const unknown = await runCli(["list", "--concern", "pigeon_bot", "--json"]);
      expect(unknown.code).toBe(2);
      expect(JSON.parse(unknown.stdout)).toMatchObject({ error: { message: expect.stringContaining('unknown concern "pigeon_bot"') } });
    }, 120_000);
  });
});
