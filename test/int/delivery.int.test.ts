/**
 * Issue 10: delivery that behaves like a mail system and an operator expects.
 * Each test drives HTTP (or the SQL/TypeScript enqueue) in, real SMTP and the
 * Slack stand-in out, and checks the view and the audit.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { removeEntity } from "../../src/entities/entity.repository";
import { UnknownEntityError } from "../../src/errors/errors";
import { enqueueNotification } from "../../src/notification/enqueue";
import { getHandling, getHistory } from "../../src/streams/handling";
import { Streams } from "../../src/streams/names";
import { findRecords } from "../../src/streams/read";
import { waitFor } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

let app: Tidings;
let api: TestApi;
let key: string;

beforeAll(async () => {
  app = await startTidings();
  api = await startApi(app.t);
  key = await apiKey(app.t, ["producer", "reader"]);
});
afterAll(async () => {
  await api.close();
  await app.stop();
});

const countClientOperations = async () => (await app.t.query("select count(*)::int as n from notification.client_operations")).rows[0].n as number;
const post = (body: unknown) => api.call("POST", "/v1/notifications", { key, body });
const view = async (id: string) => (await api.call("GET", `/v1/notifications/${id}`, { key })).json;

/** The reaction bot has handled the outcome event (so an alert, if any, would be queued by now). */
async function reactionSettled(id: string): Promise<void> {
  const [outcome] = (await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [id] })).slice(-1);
  await waitFor(async () => (await getHandling(app.t.adminDb, Streams.notificationEvents, outcome!.position, "reaction_bot")).status === "Completed", {
    what: "the reaction bot to handle the outcome",
  });
}

describe("an unknown entity is refused at enqueue, nothing stored", () => {
  it("over HTTP: 422 naming the entity", async () => {
    const before = await countClientOperations();
    const answer = await post({ entityId: "nobody", subject: "s", text: "t" });
    expect(answer.status).toBe(422);
    expect(answer.contentType).toMatch(/^application\/problem\+json/);
    expect(answer.json).toMatchObject({ type: "urn:tidings:problem:unknown-entity", entityId: "nobody" });
    expect(answer.json.detail).toMatch(/unknown entity "nobody"/);
    // With an idempotency key too: the key is not taken by the refused request.
    const keyed = await api.call("POST", "/v1/notifications", { key, body: { entityId: "nobody", subject: "s", text: "t" }, headers: { "idempotency-key": "refused-1" } });
    expect(keyed.status).toBe(422);
    expect((await app.t.query("select count(*)::int as n from api.idempotency_keys where key = 'refused-1'")).rows[0].n).toBe(0);
    expect(await countClientOperations()).toBe(before);
  });

  it("from SQL and from TypeScript: an error naming the entity", async () => {
    const before = await countClientOperations();
    const client = await app.t.createLogin({ prefix: "caller", grants: ["tidings_client"] });
    await expect(client.pool.query("select tidings.send_notification_to_entity('nobody', 's', 't')")).rejects.toThrow(/entity_id: unknown entity "nobody"/);
    await expect(enqueueNotification(app.t.db, { entityId: "nobody", subject: "s", text: "t" })).rejects.toThrow(UnknownEntityError);
    // A removed entity is unknown too.
    await createEntity(app.t, "gone", person());
    await removeEntity(app.t.db, "gone", "test");
    await expect(enqueueNotification(app.t.db, { entityId: "gone", subject: "s", text: "t" })).rejects.toThrow(/unknown entity "gone"/);
    expect(await countClientOperations()).toBe(before);
  });
});

describe("an entity with no channel to use: not sent, not a failure", () => {
  it("opted out of every channel: AudienceOptedOutOfAllChannelsEvent, status not_sent with the reason, no alert", async () => {
    await createEntity(app.t, "quiet", person({ preferences: { channels: ["email", "slack"], optedOut: ["email", "slack"], delivery: "all" } }));
    const { id } = (await post({ entityId: "quiet", subject: "s", text: "t" })).json;
    expect((await waitForOutcome(app.t, id)).type).toBe("AudienceOptedOutOfAllChannelsEvent");
    const v = await waitFor(async () => ((await view(id)).status === "not_sent" ? view(id) : undefined), { what: "the view to say not_sent" });
    expect(v.failureReason).toBe("opted out of every channel");
    await reactionSettled(id);
    expect(await findRecords(app.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);
    const audit = await inTransaction(app.t.db, "auditor", (tx) => sql<{ status: string; internal_team_alerted: boolean }>`select status, internal_team_alerted from audit.notifications where tracking_id = ${id}`.execute(tx));
    expect(audit.rows).toEqual([{ status: "not_sent", internal_team_alerted: false }]);
  });

  it("no contact detail for any channel it wants: CouldNotPrepareToSendOnAnyChannelEvent, not_sent, no alert", async () => {
    await createEntity(app.t, "unreachable", person({ email: null, slack: null }));
    const { id } = (await post({ entityId: "unreachable", subject: "s", text: "t" })).json;
    expect((await waitForOutcome(app.t, id)).type).toBe("CouldNotPrepareToSendOnAnyChannelEvent");
    const v = await waitFor(async () => ((await view(id)).status === "not_sent" ? view(id) : undefined), { what: "the view to say not_sent" });
    expect(v.failureReason).toMatch(/email: no email address; slack: no Slack destination/);
    await reactionSettled(id);
    expect(await findRecords(app.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);
  });

  it("with ALERT_ON_NOT_SENT the internal team hears about it", async () => {
    const alerting = await startTidings({ alertOnNotSent: true });
    try {
      await createEntity(alerting.t, "quiet", person({ preferences: { channels: ["email"], optedOut: ["email"], delivery: "all" } }));
      const { trackingId } = await enqueueNotification(alerting.t.db, { entityId: "quiet", subject: "muted", text: "t" });
      await waitForOutcome(alerting.t, trackingId);
      await waitFor(async () => alerting.smtp.messages.find((m) => m.to.includes("oncall@example.test") && (m.subject ?? "").includes(trackingId)), {
        what: "the alert email",
      });
    } finally {
      await alerting.stop();
    }
  });
});

describe("retry schedules that outlast greylisting", () => {
  const HOUR = 3_600_000;
  let greylisted: Tidings;

  beforeAll(async () => {
    // An hour before the second attempt, as an MTA would wait; the test moves
    // the clock on by making the queued retry due (as a fake clock would).
    greylisted = await startTidings({ retrySchedules: { email: [HOUR, 4 * HOUR], slack: [1_000] } });
    await createEntity(greylisted.t, "new-contact", person({ email: "first@greylist.example", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
  });
  afterAll(async () => {
    await greylisted.stop();
  });

  it("a 451 then a 250: retrying in the view with the error and the next attempt, then sent, every attempt in the history", async () => {
    greylisted.smtp.rejectNext(1, "RCPT", 451, "4.7.1 Greylisted, please try again later");
    const before = Date.now();
    const { trackingId } = await enqueueNotification(greylisted.t.db, { entityId: "new-contact", subject: "welcome", text: "Hello." });

    // The saga waits as long as the schedule (and its grace), not 15 minutes.
    const [saga] = await waitFor(async () => {
      const found = await findRecords(greylisted.t.adminDb, Streams.notificationSagas, { ids: [trackingId] });
      return found.length > 0 ? found : undefined;
    }, { what: "the saga" });
    expect(Date.parse((saga!.payload as { deadline: string }).deadline) - before).toBeGreaterThanOrEqual(5 * HOUR);

    const retrying = await waitFor(async () => {
      const { rows } = await greylisted.t.query("select payload from notification.views where id = $1 order by position desc limit 1", [trackingId]);
      const channel = rows[0]?.payload.channels?.[0];
      return channel?.status === "retrying" ? { view: rows[0].payload, channel } : undefined;
    }, { what: "the view to show the email retrying" });
    expect(retrying.view.status).toBe("sending");
    expect(retrying.channel.lastError).toMatch(/451/);
    const next = Date.parse(retrying.channel.nextAttemptAt);
    expect(next - Date.now()).toBeGreaterThan(0.8 * HOUR);
    expect(next - Date.now()).toBeLessThan(1.2 * HOUR);

    // An hour later (the retry made due now), the server accepts.
    const [op] = await findRecords(greylisted.t.adminDb, Streams.emailOperations, { ids: [trackingId] });
    const moved = await greylisted.t.query(
      `update graphile_worker._private_jobs set run_at = now()
       where task_id = (select id from graphile_worker._private_tasks where identifier = 'email.operations:email_bot')
         and (payload->>'position')::bigint = $1 and run_at > now() returning id`,
      [op!.position],
    );
    expect(moved.rowCount).toBe(1);
    expect((await waitForOutcome(greylisted.t, trackingId)).type).toBe("SentOnAllPreparedChannelsEvent");
    expect(greylisted.smtp.messages.filter((m) => m.subject === "welcome")).toHaveLength(1);

    const history = await getHistory(greylisted.t.adminDb, Streams.emailOperations, op!.position, "email_bot");
    expect(history.map((h) => h.action)).toEqual(["claim", "fail", "reset_failed", "claim", "complete"]);
    expect(history[1]!.reason).toMatch(/attempt 1 failed: .*451/);
    expect(history[2]!.reason).toMatch(/attempt 2 of 3 in (5[4-9]|6[0-6]) min/);
    expect((await findRecords(greylisted.t.adminDb, Streams.emailEvents, { ids: [trackingId] })).map((e) => e.type)).toEqual([
      "SendEmailRequestedEvent",
      "SendEmailAttemptFailedEvent",
      "SendEmailRequestedEvent",
      "SucceededInSendingEmailEvent",
    ]);
    const sent = await waitFor(async () => {
      const { rows } = await greylisted.t.query("select payload from notification.views where id = $1 order by position desc limit 1", [trackingId]);
      return rows[0]?.payload.status === "sent" ? rows[0].payload : undefined;
    }, { what: "the view to say sent" });
    expect(sent.channels[0]).toMatchObject({ status: "sent", attempts: 2, lastError: null });
  });
});

describe("delivery: fallback", () => {
  it("Slack first, its channel gone: the saga falls back to email, delivered; the fallback is in the view and the audit", async () => {
    const auditor = (q: string, values: unknown[]) => inTransaction(app.t.db, "auditor", (tx) => sql.raw<any>(q.replace("$1", `'${String(values[0])}'`)).execute(tx));
    await createEntity(app.t, "flo", person({ email: "flo@example.com", slack: "#gone", preferences: { channels: ["slack", "email"], optedOut: [], delivery: "fallback" } }));
    app.slack.failNext(1, { kind: "slackError", error: "channel_not_found" });
    const { id } = (await post({ entityId: "flo", subject: "fall back", text: "Hello." })).json;
    const outcome = await waitForOutcome(app.t, id);
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({ sent: ["email"], failed: ["slack"], deliveredBy: "email" });
    expect(app.smtp.messages.filter((m) => m.subject === "fall back")).toHaveLength(1);
    // Email waited for Slack to fail for good: one Slack attempt, then the email.
    expect((await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [id] })).map((e) => e.type)).toEqual([
      "SendNotificationRequestedEvent",
      "PreparedToSendOnAllChannelsEvent",
      "FellBackToNextChannelEvent",
      "SentOnAllPreparedChannelsEvent",
    ]);
    const prepared = (await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [id], types: ["PreparedToSendOnAllChannelsEvent"] }))[0]!;
    expect(prepared.payload).toMatchObject({ prepared: [{ channel: "slack" }], fallbacks: [{ channel: "email", destination: "flo@example.com" }] });
    const fell = (await findRecords(app.t.adminDb, Streams.notificationEvents, { ids: [id], types: ["FellBackToNextChannelEvent"] }))[0]!;
    expect(fell.payload).toMatchObject({ failed: { channel: "slack", outcome: "failed", error: expect.stringMatching(/channel_not_found/) }, next: { channel: "email" } });
    // The email operation was written by the saga, in reaction to Slack's failure.
    const [emailOp] = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [id] });
    const [slackFailure] = await findRecords(app.t.adminDb, Streams.slackEvents, { ids: [id], types: ["FailedToSendSlackMessageEvent"] });
    expect(emailOp!.recordedBy).toBe("tidings_saga_bot");
    expect(emailOp!.causedBy).toEqual({ stream: Streams.slackEvents, position: slackFailure!.position });

    const v = await waitFor(async () => ((await view(id)).status === "sent" ? view(id) : undefined), { what: "the view to say sent" });
    expect(v.outcome).toMatchObject({ type: "SentOnAllPreparedChannelsEvent", deliveredBy: "email" });
    expect(v.failureReason).toBeNull();
    expect(v.channels.map((c: { channel: string; status: string }) => [c.channel, c.status])).toEqual([
      ["slack", "failed"],
      ["email", "sent"],
    ]);
    const audited = await auditor("select status, sent_channels, failed_channels, failure_reason, internal_team_alerted from audit.notifications where tracking_id = $1", [id]);
    expect(audited.rows).toEqual([{ status: "sent", sent_channels: ["email"], failed_channels: ["slack"], failure_reason: null, internal_team_alerted: false }]);
    // A delivered notification is not one the reaction bot takes up: no alert.
    expect(await findRecords(app.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);
  });

  it("every channel fails for good: not sent on any, each step in the events, the team alerted", async () => {
    await createEntity(app.t, "gil", person({ email: "gil@example.com", slack: "#gone", preferences: { channels: ["slack", "email"], optedOut: [], delivery: "fallback" } }));
    app.slack.failNext(1, { kind: "slackError", error: "channel_not_found" });
    app.smtp.rejectRecipient("gil@example.com", 550, "5.1.1 No such user");
    const { id } = (await post({ entityId: "gil", subject: "nowhere", text: "Hello." })).json;
    const outcome = await waitForOutcome(app.t, id);
    expect(outcome.type).toBe("CouldNotSendOnAnyPreparedChannelEvent");
    expect(outcome.payload).toMatchObject({ sent: [], failed: ["slack", "email"] });
    expect(outcome.payload).not.toHaveProperty("deliveredBy");
    await waitFor(async () => (await findRecords(app.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).length > 0, { what: "the alert" });
  });
});

describe("an alert when a notification is delayed", () => {
  it("no outcome DELAYED_ALERT_AFTER_MS after it was prepared: NotificationDelayedEvent and an alert; the notification is still sent later", async () => {
    const delayed = await startTidings({ retrySchedules: { email: [3_600_000] }, delayedAlertAfterMs: 1_000 });
    try {
      await createEntity(delayed.t, "slow", person({ email: "slow@greylist.example", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
      delayed.smtp.rejectNext(1, "RCPT", 451, "4.7.1 Greylisted");
      const { trackingId } = await enqueueNotification(delayed.t.db, { entityId: "slow", subject: "later", text: "t" });
      const event = await waitFor(async () => (await findRecords(delayed.t.adminDb, Streams.notificationEvents, { ids: [trackingId], types: ["NotificationDelayedEvent"] }))[0], {
        what: "the delay event",
      });
      expect(event.payload).toEqual({ delayedForMs: 1_000, waitingFor: [`${trackingId}:email`] });
      const alert = await waitFor(async () => delayed.smtp.messages.find((m) => m.to.includes("oncall@example.test") && (m.subject ?? "").includes(trackingId)), {
        what: "the alert email",
      });
      expect(alert.subject).toMatch(/is delayed/);
      // It was not a failure: make the retry due, and it is sent.
      await delayed.t.query(
        `update graphile_worker._private_jobs set run_at = now()
         where task_id = (select id from graphile_worker._private_tasks where identifier = 'email.operations:email_bot') and run_at > now()`,
      );
      expect((await waitForOutcome(delayed.t, trackingId)).type).toBe("SentOnAllPreparedChannelsEvent");
    } finally {
      await delayed.stop();
    }
  });
});
