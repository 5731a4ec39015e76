import { runScript } from "../../helpers/scripts";
import { resendNotification, runAction, switchStream } from "../../../src/admin/redrive";
import { ConflictError, NotFoundError, ValidationError } from "../../../src/errors/errors";
import { enqueueNotification } from "../../../src/notification/enqueue";
import { getHandling, getHistory } from "../../../src/streams/handling";
import type { StreamRecord } from "../../../src/streams/interfaces";
import { Streams } from "../../../src/notification/streams";
import { findRecords, getByPosition, getLatestById } from "../../../src/streams/read";
import { outcomeOf, settledThen, startRules, type Rules } from "../../helpers/given";
import { OUTCOME_TYPES, createEntity, person } from "../../helpers/tidings";

/**
 * Resend (issue 10.6): an entity's Slack channel is gone (the stand-in knows
 * only #new: posting to #old answers channel_not_found, as Slack does for a
 * deleted channel); the operator corrects the entity, and a resend prepares
 * the failed channel again from the entity as it is now. Given/when/then
 * (test/helpers/given.ts): the bots run through the runner's pipeline when
 * the test lets the workflow settle, with no workers.
 */
let app: Rules;
beforeAll(async () => {
  app = await startRules({ slack: { knownChannels: ["#new"] } });
});
afterAll(async () => {
  await app.stop();
});
beforeEach(() => {
  app.smtp.reset();
  app.slack.reset();
});

let entities = 0;

/** A notification on email and Slack to an entity whose Slack channel is #old: email delivered, Slack failed for good. */
async function brokenSlackNotification(name: string) {
  entities += 1;
  const entityId = `${name}-${entities}`;
  const email = `${entityId}@example.com`;
  const entity = person({ email, slack: "#old" });
  await createEntity(app.t, entityId, entity);
  const { trackingId } = await enqueueNotification(app.t.db, { entityId, subject: "Quarterly report", text: `It is ready, ${entityId}.` });
  const outcome = await settledOutcome(trackingId);
  expect(outcome.type).toBe("SentOnSomePreparedChannelsEvent");
  expect(outcome.payload).toMatchObject({ sent: ["email"], failed: ["slack"] });
  const [op] = await findRecords(app.t.adminDb, Streams.slackOperations, { ids: [trackingId] });
  expect(op!.payload).toMatchObject({ channel: "#old", operationId: `${trackingId}:slack` });
  expect((await getHandling(app.t.adminDb, Streams.slackOperations, op!.position, "slack_bot")).status).toBe("Failed");
  return { entityId, email, entity, trackingId, oldOp: op! };
}

/** The operator corrects the entity's Slack channel (PUT /v1/entities/<id> does the same). */
async function moveToNewChannel(n: { entityId: string; entity: ReturnType<typeof person> }, overrides: Partial<ReturnType<typeof person>> = {}) {
  const changed = await createEntity(app.t, n.entityId, { ...n.entity, slack: "#new", ...overrides });
  expect(changed.changed).toBe(true);
}

/**
 * Everything a resend could write or change for this notification: requests,
 * sagas, resend events, channel operations (alerts left out: they are written
 * on their own after a failure), and the channel operations' handling.
 */
async function resendTraces(id: string) {
  const { rows } = await app.t.query(
    `select 'requests' as what, position, type from notification.internal_operations where id = $1 and type = 'ResendNotificationOp'
     union all select 'sagas', position, type from notification.sagas where id = $1
     union all select 'events', position, type from notification.events where id = $1 and type = 'ResendRequestedEvent'
     union all select 'email', position, payload->>'operationId' from email.operations where id = $1 and payload->>'purpose' = 'notification'
     union all select 'slack', position, payload->>'operationId' from slack.operations where id = $1 and payload->>'purpose' = 'notification'
     order by 1, 2`,
    [id],
  );
  const handling = await app.t.query(
    `select 'email' as channel, h.* from email.operations__handling h join email.operations o on o.position = h.position where o.id = $1 and o.payload->>'purpose' = 'notification'
     union all
     select 'slack', h.* from slack.operations__handling h join slack.operations o on o.position = h.position where o.id = $1 and o.payload->>'purpose' = 'notification'
     order by 1, position`,
    [id],
  );
  return { records: rows, handling: handling.rows };
}

async function latestOutcome(id: string): Promise<StreamRecord | undefined> {
  return getLatestById(app.t.adminDb, Streams.notificationEvents, id, { types: OUTCOME_TYPES });
}

/** When the workflow settles, then `probe` holds: its value. */
const settled = <T>(probe: () => T | Promise<T>, what?: string) => settledThen(app, probe, what);

async function settledOutcome(id: string): Promise<StreamRecord> {
  return settled(() => outcomeOf(app, id));
}

async function settledLatestOutcome(id: string, type: string): Promise<StreamRecord> {
  const latest = await settled(() => latestOutcome(id));
  expect(latest.type).toBe(type);
  return latest;
}

async function settledView(id: string, status: string) {
  const view = await settled(() => getLatestById(app.t.adminDb, Streams.notificationViews, id));
  expect((view.payload as { status: string }).status).toBe(status);
  return view;
}

/** chat.postMessage calls to a channel, whatever Slack answered. */
const postAttempts = (channel: string) => app.slack.calls.filter((c) => c.method === "chat.postMessage" && c.args.channel === channel);

const runCli = (args: string[]) => runScript("redrive", args, { DATABASE_URL: app.t.url, LOG_LEVEL: "warn" });

describe("resend", () => {
  it("dry run shows #old → #new and writes nothing; executed, it posts to #new with lineage, the view and the audit show it", async () => {
    const n = await brokenSlackNotification("ada");
    await moveToNewChannel(n);
    const before = await resendTraces(n.trackingId);
    const handlingBefore = await getHistory(app.t.adminDb, Streams.slackOperations, n.oldOp.position, "slack_bot");

    const dry = await resendNotification(app.t.db, { notificationId: n.trackingId, actor: "alice", reason: "looking first" });
    expect(dry).toMatchObject({
      verb: "resend",
      dryRun: true,
      entityId: n.entityId,
      entityVersion: 2,
      outcome: { type: "SentOnSomePreparedChannelsEvent" },
      request: null,
      archived: [],
      channels: [
        {
          channel: "slack",
          previous: { operationId: `${n.trackingId}:slack`, stream: "slack.operations", position: n.oldOp.position, destination: "#old", status: "Failed" },
          destination: "#new",
          skipped: null,
          operationId: `${n.trackingId}:slack:resend-1`,
        },
      ],
    });
    expect(dry.channels[0]!.previous.error).toContain("channel_not_found");
    expect(await resendTraces(n.trackingId)).toEqual(before);
    expect(await getHistory(app.t.adminDb, Streams.slackOperations, n.oldOp.position, "slack_bot")).toEqual(handlingBefore);

    const done = await resendNotification(app.t.db, { notificationId: n.trackingId, actor: "alice", reason: "Slack channel renamed to #new", execute: true });
    expect(done).toMatchObject({ dryRun: false, actor: "alice", reason: "Slack channel renamed to #new", request: { stream: "notification.internal_operations" } });

    const post = await settled(() => app.slack.postsOf(`${n.trackingId}:slack:resend-1`)[0]);
    expect(post.requestedChannel).toBe("#new");
    expect(post.text).toContain(`It is ready, ${n.entityId}.`);
    const outcome = await settledLatestOutcome(n.trackingId, "SentOnAllPreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({ sent: ["email", "slack"], failed: [], timedOut: false });
    expect((outcome.payload as { operations: { operationId: string; outcome: string }[] }).operations.map((o) => [o.operationId, o.outcome]).sort()).toEqual([
      [`${n.trackingId}:email`, "succeeded"],
      [`${n.trackingId}:slack:resend-1`, "succeeded"],
    ]);
    // Only Slack went out again (the entity has its one email), and #old was not tried again.
    expect(app.smtp.messages.filter((m) => m.to.includes(n.email))).toHaveLength(1);
    expect(postAttempts("#old")).toHaveLength(1);

    // Lineage: the request names the failed operation and reacts to the outcome it repairs; everything it led to is caused by it.
    const request = (await getByPosition(app.t.adminDb, done.request!.stream, done.request!.position))!;
    expect(request).toMatchObject({
      id: n.trackingId,
      type: "ResendNotificationOp",
      tags: { requested_by: "alice" },
      causedBy: { stream: "notification.events", position: dry.outcome.position },
      payload: {
        requestedBy: "alice",
        reason: "Slack channel renamed to #new",
        previous: [{ channel: "slack", operationId: `${n.trackingId}:slack`, stream: "slack.operations", position: n.oldOp.position, destination: "#old" }],
      },
    });
    const byRequest = { stream: request.stream, position: request.position };
    const newOp = (await findRecords(app.t.adminDb, Streams.slackOperations, { ids: [n.trackingId] })).find(
      (r) => (r.payload as { operationId: string }).operationId === `${n.trackingId}:slack:resend-1`,
    )!;
    expect(newOp).toMatchObject({ causedBy: byRequest, payload: { channel: "#new", purpose: "notification", entityId: n.entityId } });
    const resent = (await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [n.trackingId], types: ["ResendRequestedEvent"] }))[0]!;
    expect(resent).toMatchObject({
      causedBy: byRequest,
      payload: {
        requestedBy: "alice",
        operations: [
          { channel: "slack", previousOperationId: `${n.trackingId}:slack`, operationId: `${n.trackingId}:slack:resend-1`, previousDestination: "#old", destination: "#new" },
        ],
        skipped: [],
        carriedOver: [{ channel: "email", operationId: `${n.trackingId}:email`, outcome: "succeeded" }],
      },
    });
    const saga = (await getLatestById(app.t.adminDb, Streams.notificationSagas, n.trackingId))!;
    expect(saga).toMatchObject({ causedBy: byRequest, payload: { policy: "all" } });

    // The view: Slack sent, at its new destination; the resend with who and why.
    const view = await settledView(n.trackingId, "sent");
    const payload = view.payload as { channels: { channel: string; destination: string; status: string }[]; resends: unknown[]; outcome: { type: string } };
    expect(payload.outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    expect(payload.channels).toEqual([
      expect.objectContaining({ channel: "email", destination: n.email, status: "sent" }),
      expect.objectContaining({ channel: "slack", destination: "#new", status: "sent" }),
    ]);
    expect(payload.resends).toEqual([
      expect.objectContaining({
        requestedBy: "alice",
        reason: "Slack channel renamed to #new",
        operations: [expect.objectContaining({ previousDestination: "#old", destination: "#new" })],
      }),
    ]);

    // The audit: the request among the records (who in its tags, written as the operator), and the archived failure among the operators' changes.
    const records = await app.t.query(
      `select record_type, tags, recorded_by from audit.records
       where stream = 'notification.internal_operations' and record_id = $1 and record_type = 'ResendNotificationOp'`,
      [n.trackingId],
    );
    expect(records.rows).toEqual([{ record_type: "ResendNotificationOp", tags: { requested_by: "alice" }, recorded_by: "tidings_operator" }]);
    const redrives = await app.t.query(`select actor, action, stream, position, reason, details from audit.redrives where record_id = $1`, [n.trackingId]);
    expect(redrives.rows).toEqual([
      {
        actor: "alice",
        action: "archive_failure",
        stream: "slack.operations",
        position: n.oldOp.position,
        reason: "Slack channel renamed to #new",
        details: expect.objectContaining({ tool: "redrive", verb: "resend", resentBy: byRequest }),
      },
    ]);
    // The failure it replaced no longer waits for an operator.
    expect((await getHandling(app.t.adminDb, Streams.slackOperations, n.oldOp.position, "slack_bot")).status).toBe("ArchivedAfterFailure");

    // Nothing is left to resend.
    await expect(resendNotification(app.t.db, { notificationId: n.trackingId })).rejects.toThrow(/nothing failed to resend/);
  });

  it("through the command line: dry run, refusals, --execute, then a second resend waits its turn", async () => {
    const n = await brokenSlackNotification("cli");
    await moveToNewChannel(n);
    const before = await resendTraces(n.trackingId);

    const help = await runCli(["resend", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("--notification <id>");
    expect(help.stdout).toContain("--channel <channel>");

    const dry = await runCli(["resend", "--notification", n.trackingId]);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toContain("DRY RUN: nothing was changed");
    expect(dry.stdout).toContain("slack: #old → #new");
    expect(dry.stdout).toContain('To act, run again with --execute --reason "<why>".');
    expect(await resendTraces(n.trackingId)).toEqual(before);

    const noReason = await runCli(["resend", "--notification", n.trackingId, "--execute"]);
    expect(noReason.code).toBe(2);
    expect(noReason.stderr).toContain("--reason");
    const unknown = await runCli(["resend", "--notification", "no-such-notification", "--json"]);
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stdout)).toMatchObject({ error: { kind: "not_found", message: expect.stringContaining('unknown notification "no-such-notification"') } });
    const wrongChannel = await runCli(["resend", "--notification", n.trackingId, "--channel", "email"]);
    expect(wrongChannel.code).toBe(2);
    expect(wrongChannel.stderr).toContain("nothing failed to resend on email");
    expect(await resendTraces(n.trackingId)).toEqual(before);

    // Hold the request: internal_operation_bot does not claim it until the stream is enabled again.
    await switchStream(app.t.db, true, { concern: "internal_operation_bot" }, { execute: true, reason: "hold the resend for the test", actor: "test" });
    try {
      const done = await runCli(["resend", "--notification", n.trackingId, "--channel", "slack", "--execute", "--reason", "channel renamed", "--actor", "cli-op", "--json"]);
      expect(done.code).toBe(0);
      const report = JSON.parse(done.stdout);
      expect(report).toMatchObject({ dryRun: false, actor: "cli-op", reason: "channel renamed", request: { stream: "notification.internal_operations" } });
      const again = await runCli(["resend", "--notification", n.trackingId, "--execute", "--reason", "once more"]);
      expect(again.code).toBe(2);
      expect(again.stderr).toContain(`a resend of notification ${n.trackingId} is already waiting to be handled`);
      await expect(resendNotification(app.t.db, { notificationId: n.trackingId })).rejects.toBeInstanceOf(ConflictError);
    } finally {
      await switchStream(app.t.db, false, { concern: "internal_operation_bot" }, { execute: true, reason: "test clean-up", actor: "test" });
    }

    const post = await settled(() => app.slack.postsOf(`${n.trackingId}:slack:resend-1`)[0]);
    expect(post.requestedChannel).toBe("#new");
    await settledLatestOutcome(n.trackingId, "SentOnAllPreparedChannelsEvent");
    const redrives = await app.t.query(`select actor, reason from audit.redrives where record_id = $1`, [n.trackingId]);
    expect(redrives.rows).toEqual([{ actor: "cli-op", reason: "channel renamed" }]);
  }, 120_000);

  it("a channel the entity can no longer be reached on is skipped with the reason; the outcome still counts it as failed", async () => {
    entities += 1;
    const entityId = `both-${entities}`;
    const email = `${entityId}@example.com`;
    app.smtp.rejectRecipient(email, 550, "5.1.1 mailbox unavailable");
    const entity = person({ email, slack: "#old" });
    await createEntity(app.t, entityId, entity);
    const { trackingId } = await enqueueNotification(app.t.db, { entityId, subject: "Both broken", text: "Nothing arrives." });
    expect((await settledOutcome(trackingId)).type).toBe("CouldNotSendOnAnyPreparedChannelEvent");
    const [emailOp] = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [trackingId] });
    // The entity now has Slack #new, and has opted out of email.
    await createEntity(app.t, entityId, { ...entity, slack: "#new", preferences: { ...entity.preferences, optedOut: ["email"] } });

    const dry = await resendNotification(app.t.db, { notificationId: trackingId });
    expect(dry.channels.map((c) => [c.channel, c.previous.destination, c.destination, c.skipped])).toEqual([
      ["email", email, null, "opted out"],
      ["slack", "#old", "#new", null],
    ]);
    expect(dry.warnings).toContain("email would be skipped: opted out");

    const done = await resendNotification(app.t.db, { notificationId: trackingId, actor: "dana", reason: "new channel", execute: true });
    // Only the resent channel's failure is archived: the email failure still waits for an operator.
    expect(done.archived.map((a) => a.stream)).toEqual(["slack.operations"]);
    expect((await getHandling(app.t.adminDb, Streams.emailOperations, emailOp!.position, "email_bot")).status).toBe("Failed");

    await settled(() => app.slack.postsOf(`${trackingId}:slack:resend-1`)[0]);
    const outcome = await settledLatestOutcome(trackingId, "SentOnSomePreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({ sent: ["slack"], failed: ["email"] });
    const [resent] = await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [trackingId], types: ["ResendRequestedEvent"] });
    expect(resent!.payload).toMatchObject({
      operations: [{ channel: "slack", destination: "#new" }],
      skipped: [{ channel: "email", previousOperationId: `${trackingId}:email`, reason: "opted out" }],
      carriedOver: [{ channel: "email", outcome: "failed" }],
    });
    const view = await settledView(trackingId, "partially_sent");
    expect((view.payload as { channels: unknown[] }).channels).toEqual([
      expect.objectContaining({ channel: "email", destination: email, status: "failed" }),
      expect.objectContaining({ channel: "slack", destination: "#new", status: "sent" }),
    ]);
  });

  it("refuses when nothing can be resent, and for unknown or delivered notifications", async () => {
    const n = await brokenSlackNotification("gone");
    await createEntity(app.t, n.entityId, { ...n.entity, slack: null });
    const dry = await resendNotification(app.t.db, { notificationId: n.trackingId });
    expect(dry.channels).toEqual([expect.objectContaining({ channel: "slack", destination: null, skipped: "no Slack destination" })]);
    expect(dry.warnings.join(" ")).toContain("nothing can be resent now");
    const before = await resendTraces(n.trackingId);
    await expect(resendNotification(app.t.db, { notificationId: n.trackingId, execute: true, reason: "try" })).rejects.toThrow(/refusing to resend.*no Slack destination/);
    expect(await resendTraces(n.trackingId)).toEqual(before);
    expect((await getHandling(app.t.adminDb, Streams.slackOperations, n.oldOp.position, "slack_bot")).status).toBe("Failed");

    await expect(resendNotification(app.t.db, { notificationId: "nobody-knows" })).rejects.toBeInstanceOf(NotFoundError);
    await expect(resendNotification(app.t.db, { notificationId: n.trackingId, channels: ["pigeon"] })).rejects.toBeInstanceOf(ValidationError);

    await createEntity(app.t, "fine-fred", person({ email: "fred@example.com", slack: "#new" }));
    const { trackingId } = await enqueueNotification(app.t.db, { entityId: "fine-fred", subject: "All good", text: "Delivered." });
    expect((await settledOutcome(trackingId)).type).toBe("SentOnAllPreparedChannelsEvent");
    await expect(resendNotification(app.t.db, { notificationId: trackingId })).rejects.toThrow(/nothing failed to resend: .* ended with SentOnAllPreparedChannelsEvent/);
  });

  it("a plain re-drive of the failed operation still posts to #old, as it was prepared", async () => {
    const n = await brokenSlackNotification("redrive");
    await moveToNewChannel(n);
    expect(postAttempts("#old")).toHaveLength(1);

    const report = await runAction(app.t.db, "redrive-failed", { notification: n.trackingId, concern: "slack_bot" }, { execute: true, reason: "try again", actor: "erin" });
    expect(report).toMatchObject({ changed: 1, queued: 1 });
    await settled(async () => {
      const h = await getHandling(app.t.adminDb, Streams.slackOperations, n.oldOp.position, "slack_bot");
      return h.status === "Failed" && h.attempts === 2;
    });
    expect(postAttempts("#old")).toHaveLength(2);
    expect(postAttempts("#new")).toHaveLength(0);
    expect((await latestOutcome(n.trackingId))!.type).toBe("SentOnSomePreparedChannelsEvent");
  });
});

describe("resend and the notification's category", () => {
  /** A `category` notification on email and Slack whose Slack post failed for good (#old is gone). */
  async function brokenSlackInCategory(name: string, category: string) {
    entities += 1;
    const entityId = `${name}-${entities}`;
    const entity = person({ email: `${entityId}@example.com`, slack: "#old" });
    await createEntity(app.t, entityId, entity);
    const { trackingId } = await enqueueNotification(app.t.db, { entityId, subject: "News", text: "Read on.", category });
    expect((await settledOutcome(trackingId)).payload).toMatchObject({ sent: ["email"], failed: ["slack"] });
    return { entityId, entity, trackingId };
  }

  it("honours the entity's opt-out of the category as it is now: the channel is skipped, naming the category", async () => {
    const n = await brokenSlackInCategory("mia", "marketing");
    await moveToNewChannel(n, { preferences: { ...n.entity.preferences, categories: { marketing: { optedOut: ["slack"] } } } });
    const dry = await resendNotification(app.t.db, { notificationId: n.trackingId, actor: "alice", reason: "channel fixed" });
    expect(dry.channels).toMatchObject([{ channel: "slack", destination: null, skipped: "opted out of category 'marketing'" }]);
    await expect(resendNotification(app.t.db, { notificationId: n.trackingId, actor: "alice", reason: "channel fixed", execute: true })).rejects.toThrow(
      /opted out of category 'marketing'/,
    );
  });

  it("a critical category still goes out, whatever the entity opted out of", async () => {
    const critical = app.deps.notification.criticalCategories;
    app.deps.notification.criticalCategories = ["security"];
    try {
      const n = await brokenSlackInCategory("max", "security");
      await moveToNewChannel(n, { preferences: { ...n.entity.preferences, optedOut: ["slack"], categories: { security: { optedOut: "all" } } } });
      const dry = await resendNotification(app.t.db, { notificationId: n.trackingId, actor: "alice", reason: "channel fixed" });
      expect(dry.channels).toMatchObject([{ channel: "slack", destination: "#new", skipped: null }]);
    } finally {
      app.deps.notification.criticalCategories = critical;
    }
  });
});
