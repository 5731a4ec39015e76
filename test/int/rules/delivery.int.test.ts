/**
 * Issue 10: delivery that behaves like a mail system and an operator expects.
 * Its rules, given/when/then (test/helpers/given.ts): HTTP
 * (or the TypeScript enqueue) in, the bots through the runner's pipeline
 * with no workers, real SMTP and the Slack stand-in out; time moves on the
 * rules' clock instead of a test waiting for it. The view and the audit are
 * checked as before.
 */
import { sql } from "kysely";
import { inTransaction } from "../../../src/db/database";
import { removeEntity } from "../../../src/entities/entity.repository";
import { UnknownEntityError } from "../../../src/errors/errors";
import { enqueueNotification } from "../../../src/notification/enqueue";
import { getHistory } from "../../../src/streams/handling";
import { Streams } from "../../../src/notification/streams";
import { findRecords } from "../../../src/streams/read";
import { apiKey, startApi, type TestApi } from "../../helpers/api";
import { handlingOf, outcomeOf, startRules, whenSettled, type Rules } from "../../helpers/given";
import { createEntity, person } from "../../helpers/tidings";

let rules: Rules;
let api: TestApi;
let key: string;

beforeAll(async () => {
  rules = await startRules();
  api = await startApi(rules.t);
  key = await apiKey(rules.t, ["producer", "reader"]);
});
afterAll(async () => {
  await api.close();
  await rules.stop();
});

const countClientOperations = async () => (await rules.t.query("select count(*)::int as n from notification.client_operations")).rows[0].n as number;
const post = (body: unknown) => api.call("POST", "/v1/notifications", { key, body });
const view = async (id: string) => (await api.call("GET", `/v1/notifications/${id}`, { key })).json;

/** The reaction bot has handled the outcome event (so an alert, if any, is queued). */
async function expectReactionHandled(r: Rules, id: string): Promise<void> {
  const [outcome] = (await findRecords(r.t.adminDb, Streams.notificationEvents, { ids: [id] })).slice(-1);
  expect((await handlingOf(r, outcome!, "reaction_bot")).status).toBe("Completed");
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
    expect((await rules.t.query("select count(*)::int as n from api.idempotency_keys where key = 'refused-1'")).rows[0].n).toBe(0);
    expect(await countClientOperations()).toBe(before);
  });

  it("from SQL and from TypeScript: an error naming the entity", async () => {
    const before = await countClientOperations();
    const client = await rules.t.createLogin({ prefix: "caller", grants: ["tidings_client"] });
    await expect(client.pool.query("select notification.send_notification_to_entity('nobody', 's', 't')")).rejects.toThrow(/entity_id: unknown entity "nobody"/);
    await expect(enqueueNotification(rules.t.db, { entityId: "nobody", subject: "s", text: "t" })).rejects.toThrow(UnknownEntityError);
    // A removed entity is unknown too.
    await createEntity(rules.t, "gone", person());
    await removeEntity(rules.t.db, "gone", "test");
    await expect(enqueueNotification(rules.t.db, { entityId: "gone", subject: "s", text: "t" })).rejects.toThrow(/unknown entity "gone"/);
    expect(await countClientOperations()).toBe(before);
  });
});

describe("an entity with no channel to use: not sent, not a failure", () => {
  it("opted out of every channel: AudienceOptedOutOfAllChannelsEvent, status not_sent with the reason, no alert", async () => {
    await createEntity(rules.t, "quiet", person({ name: "Quinn", preferences: { channels: ["email", "slack"], optedOut: ["email", "slack"], delivery: "all" } }));
    const { id } = (await post({ entityId: "quiet", subject: "s", text: "t" })).json;
    await whenSettled(rules);
    expect((await outcomeOf(rules, id))!.type).toBe("AudienceOptedOutOfAllChannelsEvent");
    const v = await view(id);
    expect(v.status).toBe("not_sent");
    // Who it was for, by name too, though nothing was prepared.
    expect(v.entity).toEqual({ id: "quiet", name: "Quinn" });
    expect(v.failureReason).toBe("opted out of every channel");
    await expectReactionHandled(rules, id);
    expect(await findRecords(rules.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);
    const audit = await inTransaction(rules.t.db, "auditor", (tx) =>
      sql<{ status: string; internal_team_alerted: boolean }>`select status, internal_team_alerted from audit.notifications where tracking_id = ${id}`.execute(tx),
    );
    expect(audit.rows).toEqual([{ status: "not_sent", internal_team_alerted: false }]);
  });

  it("no contact detail for any channel it wants: CouldNotPrepareToSendOnAnyChannelEvent, not_sent, no alert", async () => {
    await createEntity(rules.t, "unreachable", person({ name: "Una", email: null, slack: null }));
    const { id } = (await post({ entityId: "unreachable", subject: "s", text: "t" })).json;
    await whenSettled(rules);
    expect((await outcomeOf(rules, id))!.type).toBe("CouldNotPrepareToSendOnAnyChannelEvent");
    const v = await view(id);
    expect(v.status).toBe("not_sent");
    expect(v.entity).toEqual({ id: "unreachable", name: "Una" });
    expect(v.failureReason).toMatch(/email: no email address; slack: no Slack destination/);
    await expectReactionHandled(rules, id);
    expect(await findRecords(rules.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);
  });

  it("with ALERT_ON_NOT_SENT the internal team hears about it", async () => {
    const alerting = await startRules({ alertOnNotSent: true });
    try {
      await createEntity(alerting.t, "quiet", person({ preferences: { channels: ["email"], optedOut: ["email"], delivery: "all" } }));
      const { trackingId } = await enqueueNotification(alerting.t.db, { entityId: "quiet", subject: "muted", text: "t" });
      await whenSettled(alerting);
      expect(await outcomeOf(alerting, trackingId)).toBeDefined();
      expect(alerting.smtp.messages.find((m) => m.to.includes("oncall@example.test") && (m.subject ?? "").includes(trackingId))).toBeDefined();
    } finally {
      await alerting.stop();
    }
  });
});

describe("retry schedules that outlast greylisting", () => {
  const HOUR = 3_600_000;
  let greylisted: Rules;

  beforeAll(async () => {
    // An hour before the second attempt, as an MTA would wait; the rules'
    // clock moves on by that hour instead of the test waiting.
    greylisted = await startRules({ retrySchedules: { email: [HOUR, 4 * HOUR], slack: [1_000] } });
    await createEntity(greylisted.t, "new-contact", person({ email: "first@greylist.example", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
  });
  afterAll(async () => {
    await greylisted.stop();
  });

  it("a 451 then a 250: retrying in the view with the error and the next attempt, then sent, every attempt in the history", async () => {
    greylisted.smtp.rejectNext(1, "RCPT", 451, "4.7.1 Greylisted, please try again later");
    const before = Date.now();
    const { trackingId } = await enqueueNotification(greylisted.t.db, { entityId: "new-contact", subject: "welcome", text: "Hello." });
    await whenSettled(greylisted);

    // The saga waits as long as the schedule (and its grace), not 15 minutes.
    const [saga] = await findRecords(greylisted.t.adminDb, Streams.notificationSagas, { ids: [trackingId] });
    expect(Date.parse((saga!.payload as { deadline: string }).deadline) - before).toBeGreaterThanOrEqual(5 * HOUR);

    const { rows } = await greylisted.t.query("select payload from notification.views where id = $1 order by position desc limit 1", [trackingId]);
    const retrying = { view: rows[0].payload, channel: rows[0].payload.channels[0] };
    expect(retrying.channel.status).toBe("retrying");
    expect(retrying.view.status).toBe("sending");
    expect(retrying.channel.lastError).toMatch(/451/);
    const next = Date.parse(retrying.channel.nextAttemptAt);
    expect(next - Date.now()).toBeGreaterThan(0.8 * HOUR);
    expect(next - Date.now()).toBeLessThan(1.2 * HOUR);

    // The retry is in graphile-worker's queue, an hour away.
    const moved = await greylisted.t.query(`select id from graphile_worker.jobs where task_identifier = 'email.operations:email_bot' and run_at > now() + interval '50 minutes'`);
    expect(moved.rowCount).toBe(1);
    // An hour later, the server accepts.
    await whenSettled(greylisted, { later: true });
    expect((await outcomeOf(greylisted, trackingId))!.type).toBe("SentOnAllPreparedChannelsEvent");
    expect(greylisted.smtp.messages.filter((m) => m.subject === "welcome")).toHaveLength(1);

    const [op] = await findRecords(greylisted.t.adminDb, Streams.emailOperations, { ids: [trackingId] });
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
    const { rows: sentRows } = await greylisted.t.query("select payload from notification.views where id = $1 order by position desc limit 1", [trackingId]);
    const sent = sentRows[0].payload;
    expect(sent.status).toBe("sent");
    expect(sent.channels[0]).toMatchObject({ status: "sent", attempts: 2, lastError: null });
  });
});

describe("delivery: fallback", () => {
  it("Slack first, its channel gone: the saga falls back to email, delivered; the fallback is in the view and the audit", async () => {
    const auditor = (q: string, values: unknown[]) => inTransaction(rules.t.db, "auditor", (tx) => sql.raw<any>(q.replace("$1", `'${String(values[0])}'`)).execute(tx));
    await createEntity(rules.t, "flo", person({ email: "flo@example.com", slack: "#gone", preferences: { channels: ["slack", "email"], optedOut: [], delivery: "fallback" } }));
    rules.slack.failNext(1, { kind: "slackError", error: "channel_not_found" });
    const { id } = (await post({ entityId: "flo", subject: "fall back", text: "Hello." })).json;
    await whenSettled(rules);
    const outcome = (await outcomeOf(rules, id))!;
    expect(outcome.type).toBe("SentOnAllPreparedChannelsEvent");
    expect(outcome.payload).toMatchObject({ sent: ["email"], failed: ["slack"], deliveredBy: "email" });
    expect(rules.smtp.messages.filter((m) => m.subject === "fall back")).toHaveLength(1);
    // Email waited for Slack to fail for good: one Slack attempt, then the email.
    expect((await findRecords(rules.t.adminDb, Streams.notificationEvents, { ids: [id] })).map((e) => e.type)).toEqual([
      "SendNotificationRequestedEvent",
      "PreparedToSendOnAllChannelsEvent",
      "FellBackToNextChannelEvent",
      "SentOnAllPreparedChannelsEvent",
    ]);
    const prepared = (await findRecords(rules.t.adminDb, Streams.notificationEvents, { ids: [id], types: ["PreparedToSendOnAllChannelsEvent"] }))[0]!;
    expect(prepared.payload).toMatchObject({ prepared: [{ channel: "slack" }], fallbacks: [{ channel: "email", destination: "flo@example.com" }] });
    const fell = (await findRecords(rules.t.adminDb, Streams.notificationEvents, { ids: [id], types: ["FellBackToNextChannelEvent"] }))[0]!;
    expect(fell.payload).toMatchObject({ failed: { channel: "slack", outcome: "failed", error: expect.stringMatching(/channel_not_found/) }, next: { channel: "email" } });
    // The email operation was written by the saga, in reaction to Slack's failure.
    const [emailOp] = await findRecords(rules.t.adminDb, Streams.emailOperations, { ids: [id] });
    const [slackFailure] = await findRecords(rules.t.adminDb, Streams.slackEvents, { ids: [id], types: ["FailedToSendSlackMessageEvent"] });
    expect(emailOp!.recordedBy).toBe("tidings_saga_bot");
    expect(emailOp!.causedBy).toEqual({ stream: Streams.slackEvents, position: slackFailure!.position });

    const v = await view(id);
    expect(v.status).toBe("sent");
    expect(v.outcome).toMatchObject({ type: "SentOnAllPreparedChannelsEvent", deliveredBy: "email" });
    expect(v.failureReason).toBeNull();
    expect(v.channels.map((c: { channel: string; status: string }) => [c.channel, c.status])).toEqual([
      ["slack", "failed"],
      ["email", "sent"],
    ]);
    const audited = await auditor("select status, sent_channels, failed_channels, failure_reason, internal_team_alerted from audit.notifications where tracking_id = $1", [id]);
    expect(audited.rows).toEqual([{ status: "sent", sent_channels: ["email"], failed_channels: ["slack"], failure_reason: null, internal_team_alerted: false }]);
    // A delivered notification is not one the reaction bot takes up: no alert.
    expect(await findRecords(rules.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).toEqual([]);
  });

  it("every channel fails for good: not sent on any, each step in the events, the team alerted", async () => {
    await createEntity(rules.t, "gil", person({ email: "gil@example.com", slack: "#gone", preferences: { channels: ["slack", "email"], optedOut: [], delivery: "fallback" } }));
    rules.slack.failNext(1, { kind: "slackError", error: "channel_not_found" });
    rules.smtp.rejectRecipient("gil@example.com", 550, "5.1.1 No such user");
    const { id } = (await post({ entityId: "gil", subject: "nowhere", text: "Hello." })).json;
    await whenSettled(rules);
    const outcome = (await outcomeOf(rules, id))!;
    expect(outcome.type).toBe("CouldNotSendOnAnyPreparedChannelEvent");
    expect(outcome.payload).toMatchObject({ sent: [], failed: ["slack", "email"] });
    expect(outcome.payload).not.toHaveProperty("deliveredBy");
    expect((await findRecords(rules.t.adminDb, Streams.notificationInternalOperations, { ids: [id] })).length).toBeGreaterThan(0);
  });
});

describe("an alert when a notification is delayed", () => {
  it("no outcome DELAYED_ALERT_AFTER_MS after it was prepared: NotificationDelayedEvent and an alert; the notification is still sent later", async () => {
    const delayed = await startRules({ retrySchedules: { email: [3_600_000] }, delayedAlertAfterMs: 1_000 });
    try {
      await createEntity(delayed.t, "slow", person({ email: "slow@greylist.example", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
      delayed.smtp.rejectNext(1, "RCPT", 451, "4.7.1 Greylisted");
      const { trackingId } = await enqueueNotification(delayed.t.db, { entityId: "slow", subject: "later", text: "t" });
      await whenSettled(delayed);
      // A second later by the clock the bots see: the delay watch is due, the email's retry an hour away.
      delayed.clock.advance(1_000);
      await whenSettled(delayed);
      const [event] = await findRecords(delayed.t.adminDb, Streams.notificationEvents, { ids: [trackingId], types: ["NotificationDelayedEvent"] });
      expect(event!.payload).toEqual({ delayedForMs: 1_000, waitingFor: [`${trackingId}:email`] });
      const alert = delayed.smtp.messages.find((m) => m.to.includes("oncall@example.test") && (m.subject ?? "").includes(trackingId));
      expect(alert!.subject).toMatch(/is delayed/);
      // It was not a failure: an hour later the retry is made, and it is sent.
      await whenSettled(delayed, { later: true });
      expect((await outcomeOf(delayed, trackingId))!.type).toBe("SentOnAllPreparedChannelsEvent");
    } finally {
      await delayed.stop();
    }
  });
});
