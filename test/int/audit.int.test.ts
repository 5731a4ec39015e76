import { runScript } from "../helpers/scripts";
import { readFileSync } from "node:fs";
import path from "node:path";
import { sql } from "kysely";
import {
  asAuditor,
  findEmails,
  findNotifications,
  findSlackMessages,
  getEntityVersions,
  getNotificationDetail,
  listFailuresWaiting,
  listRedrives,
  type AuditFailure,
} from "../../src/audit/queries";
import { inTransaction } from "../../src/db/database";
import { ValidationError } from "../../src/errors/errors";
import { enqueueNotification } from "../../src/notification/enqueue";
import { appendOne } from "../../src/streams/append";
import { claim, setStreamDisabled, transition } from "../../src/streams/handling";
import { Streams } from "../../src/notification/streams";
import { asOwner, createTestDatabase, declareTestStream, waitFor } from "../helpers/db";
import { createEntity, enqueueForGoneEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { apiKey, startApi, type TestApi } from "../helpers/api";

/**
 * The audit views against a database where real deliveries happened: one
 * notification delivered on both channels, one retried after a 451, one whose
 * Slack message fails with channel_not_found, one whose email is refused with
 * 550, one to an unknown entity, a preference change, and an operator's
 * archive and stream switch; then, over HTTP, two versions of a template
 * sent to eve (one each), and two scheduled notifications, one of them
 * cancelled. The queries of docs/audit.md are run from the
 * document itself, so the documentation cannot drift from the views.
 */

const ROOT = path.resolve(__dirname, "../..");
jest.setTimeout(60_000);

let app: Tidings;
let api: TestApi;
const ids = { ada: "", di: "", bob: "", cy: "", nobody: "", eveV1: "", eveV2: "", scheduled: "", cancelled: "" };
/** An instant between eve's two template notifications, and the sendAt of the scheduled ones. */
let betweenTemplateVersions: Date;
const SEND_AT = new Date(Date.now() + 86_400_000).toISOString();
/** An instant between ada's first version and her preference change. */
let beforePreferenceChange: Date;
let failuresBeforeArchive: AuditFailure[];
const ARCHIVE_REASON = "mailbox does not exist; customer asked to correct the address";

const send = (entityId: string) => enqueueNotification(app.t.db, { entityId, subject: `Report for ${entityId}`, text: "Your report is ready." });

beforeAll(async () => {
  app = await startTidings();
  await createEntity(app.t, "ada", person({ email: "test@example.com", slack: "U0ADA0001" }));
  ids.ada = (await send("ada")).trackingId;
  await waitForOutcome(app.t, ids.ada);

  // One transient refusal, then accepted. Nothing else is being sent now, so
  // the fault meets this email.
  await createEntity(app.t, "di", person({ email: "di@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
  app.smtp.rejectNext(1, "DATA", 451, "4.3.0 Try again later");
  ids.di = (await send("di")).trackingId;
  await waitForOutcome(app.t, ids.di);

  await createEntity(app.t, "bob", person({ email: "bob@example.com", slack: "#gone" }));
  app.slack.failNext(1, { kind: "slackError", error: "channel_not_found" });
  ids.bob = (await send("bob")).trackingId;
  await waitForOutcome(app.t, ids.bob);

  await createEntity(app.t, "cy", person({ email: "cy@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
  app.smtp.rejectRecipient("cy@example.com", 550, "5.1.1 No such user");
  ids.cy = (await send("cy")).trackingId;
  ids.nobody = (await enqueueForGoneEntity(app.t, "nobody-here")).trackingId;
  await waitForOutcome(app.t, ids.cy);
  await waitForOutcome(app.t, ids.nobody);

  // The three failures each alert the internal team by email.
  await waitFor(
    async () => {
      const { rows } = await app.t.query("select count(*)::int as n from audit.emails where purpose = 'internal_alert' and status = 'sent'");
      return rows[0].n === 3;
    },
    { what: "three delivered alert emails", timeoutMs: 30_000 },
  );

  // The database's clock, so the instant is comparable with recorded_at.
  beforePreferenceChange = (await app.t.query("select clock_timestamp() as now")).rows[0].now;
  await createEntity(app.t, "ada", person({ email: "test@example.com", slack: "U0ADA0001", preferences: { channels: ["email"], optedOut: ["slack"], delivery: "all" } }));

  failuresBeforeArchive = await asAuditor(app.t.db, (tx) => listFailuresWaiting(tx));

  // An operator archives cy's failed email and switches the Slack stream off and on.
  const [cyEmail] = await asAuditor(app.t.db, (tx) => findEmails(tx, { to: "cy@example.com" }));
  // One transaction each, so each change has its own time and the order is certain.
  await inTransaction(app.t.db, "operator", (tx) =>
    transition(tx, { stream: Streams.emailOperations, position: cyEmail!.operation_position, concern: "email_bot" }, "archive_failure", {
      actor: "alice",
      reason: ARCHIVE_REASON,
    }),
  );
  await inTransaction(app.t.db, "operator", (tx) => setStreamDisabled(tx, Streams.slackOperations, "slack_bot", true, { actor: "alice", reason: "Slack workspace migration" }));
  await inTransaction(app.t.db, "operator", (tx) => setStreamDisabled(tx, Streams.slackOperations, "slack_bot", false, { actor: "alice", reason: "migration done" }));

  // Over HTTP: eve gets version 1 of a template, then version 2.
  api = await startApi(app.t);
  const admin = await apiKey(app.t, ["admin"]);
  const producer = await apiKey(app.t, ["producer"]);
  const putTemplate = async (subject: string) => {
    const answer = await api.call("PUT", "/v1/templates/report-ready", { key: admin, body: { email: { subject, text: "Hello {{ entity.name }}." } } });
    expect(answer.status).toBeLessThan(300);
  };
  const post = async (body: Record<string, unknown>) => {
    const answer = await api.call("POST", "/v1/notifications", { key: producer, body });
    expect(answer.status).toBe(202);
    return answer.json.id as string;
  };
  await createEntity(app.t, "eve", person({ name: "Eve", email: "eve@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
  await putTemplate("Report {{ data.n }} is ready");
  ids.eveV1 = await post({ entityId: "eve", template: "report-ready", data: { n: 1 } });
  await waitForOutcome(app.t, ids.eveV1);
  betweenTemplateVersions = (await app.t.query("select clock_timestamp() as now")).rows[0].now;
  await putTemplate("Your report {{ data.n }} is ready");
  ids.eveV2 = await post({ entityId: "eve", template: "report-ready", data: { n: 2 } });
  await waitForOutcome(app.t, ids.eveV2);
  // Two scheduled for tomorrow; one cancelled.
  ids.scheduled = await post({ entityId: "eve", subject: "Tomorrow's invoice", text: "Attached.", category: "billing", sendAt: SEND_AT });
  ids.cancelled = await post({ entityId: "eve", subject: "Tomorrow's offer", text: "Never mind.", sendAt: SEND_AT });
  expect((await api.call("POST", `/v1/notifications/${ids.cancelled}/cancel`, { key: producer })).status).toBe(200);
}, 120_000);

afterAll(async () => {
  await api?.close();
  await app?.stop();
});

// --- docs/audit.md -------------------------------------------------------------

/** The named queries of docs/audit.md: `<!-- query: name -->` followed by a fenced sql block. */
function docQueries(): Map<string, string> {
  const text = readFileSync(path.join(ROOT, "docs/audit.md"), "utf8");
  const found = new Map<string, string>();
  for (const m of text.matchAll(/<!-- query: ([a-z0-9-]+) -->\s*```sql\n([\s\S]*?)```/g)) found.set(m[1]!, m[2]!.trim());
  return found;
}

const DOC = docQueries();

/** A documented query with its example values replaced; each replaced value must be in the query. */
function docQuery(name: string, replace: Array<[string, string]> = []): string {
  let text = DOC.get(name);
  if (text === undefined) throw new Error(`docs/audit.md has no query named ${name}`);
  for (const [from, to] of replace) {
    if (!text.includes(from)) throw new Error(`query ${name} in docs/audit.md no longer contains ${from}`);
    text = text.split(from).join(to);
  }
  return text;
}

async function auditorRows<R = any>(text: string): Promise<R[]> {
  return asAuditor(app.t.db, async (tx) => (await sql.raw<R>(text).execute(tx)).rows);
}

const withoutSemicolon = (q: string) => q.replace(/;\s*$/, "");

/** Each documented query and what it must answer here. */
const DOC_CHECKS: Record<string, () => Promise<void>> = {
  "emails-to-address": async () => {
    const rows = await auditorRows(docQuery("emails-to-address"));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      notification_id: ids.ada,
      subject: "Report for ada",
      status: "sent",
      attempts: 1,
      smtp_code: 250,
      message_id: `<${ids.ada}.email@example.test>`,
      last_error: null,
    });
    expect(rows[0].response).toMatch(/^250 /);
    expect(rows[0].sent_at.getTime()).toBeGreaterThanOrEqual(rows[0].requested_at.getTime());
  },

  "failed-yesterday": async () => {
    // The deliveries happened just now: ask about the last hour instead of yesterday.
    const rows = await auditorRows(
      docQuery("failed-yesterday", [["requested_at >= current_date - 1 and requested_at < current_date", "requested_at >= now() - interval '1 hour'"]]),
    );
    const byId = new Map(rows.map((r) => [r.tracking_id, r]));
    expect([...byId.keys()].sort()).toEqual([ids.bob, ids.cy, ids.nobody].sort());
    expect(byId.get(ids.bob)).toMatchObject({
      entity_id: "bob",
      status: "partially_sent",
      outcome_type: "SentOnSomePreparedChannelsEvent",
      failed_channels: ["slack"],
      failure_reason: expect.stringMatching(/^slack: .*channel_not_found/),
      internal_team_alerted: true,
    });
    expect(byId.get(ids.cy)).toMatchObject({
      status: "failed",
      outcome_type: "CouldNotSendOnAnyPreparedChannelEvent",
      failed_channels: ["email"],
      failure_reason: expect.stringMatching(/^email: .*550/),
      internal_team_alerted: true,
    });
    expect(byId.get(ids.nobody)).toMatchObject({
      entity_id: "nobody-here",
      status: "failed",
      outcome_type: "CouldNotGetOrUseAudienceEvent",
      failed_channels: [],
      failure_reason: 'unknown entity "nobody-here"',
      internal_team_alerted: true,
    });
  },

  "entity-at": async () => {
    const at = (instant: Date) => auditorRows(docQuery("entity-at", [["'2026-11-26 14:02:00+00'", `'${instant.toISOString()}'`]]));
    const before = await at(beforePreferenceChange);
    expect(before).toHaveLength(1);
    expect(before[0]).toMatchObject({ entity_id: "ada", removed: false, channels: ["email", "slack"], opted_out: [], delivery: "all", email: "test@example.com" });
    expect(before[0].valid_to).not.toBeNull();
    const now = await at(new Date(Date.now() + 1000));
    expect(now).toHaveLength(1);
    expect(now[0]).toMatchObject({ channels: ["email"], opted_out: ["slack"], valid_to: null });
    // Versions count per entity: ada's first is 1, her preference change 2, whatever else entity.events holds.
    expect([before[0].version, now[0].version]).toEqual([1, 2]);
    expect(now[0].position).toBeGreaterThan(before[0].position);
    // Before the entity existed: nothing.
    expect(await at(new Date("2000-01-01T00:00:00Z"))).toEqual([]);
  },

  redrives: async () => {
    const rows = await auditorRows(docQuery("redrives"));
    expect(rows).toEqual([
      expect.objectContaining({ actor: "alice", action: "enable_stream", stream: "slack.operations", concern: "slack_bot", position: null, reason: "migration done" }),
      expect.objectContaining({ actor: "alice", action: "disable_stream", stream: "slack.operations", concern: "slack_bot", reason: "Slack workspace migration" }),
      expect.objectContaining({
        actor: "alice",
        action: "archive_failure",
        stream: "email.operations",
        record_id: ids.cy,
        concern: "email_bot",
        from_status: "Failed",
        to_status: "ArchivedAfterFailure",
        reason: ARCHIVE_REASON,
      }),
    ]);
  },

  "failures-waiting": async () => {
    const rows = await auditorRows(docQuery("failures-waiting"));
    // cy's email was archived: only bob's Slack message still waits.
    expect(rows).toEqual([
      expect.objectContaining({ stream: "slack.operations", concern: "slack_bot", record_id: ids.bob, attempts: 1, error: expect.stringContaining("channel_not_found") }),
    ]);
  },

  "slowest-sends": async () => {
    const rows = await auditorRows<{ channel: string; notification_id: string; seconds: number }>(
      `select channel, notification_id, extract(epoch from took)::float8 as seconds from (${withoutSemicolon(docQuery("slowest-sends"))}) q`,
    );
    // Delivered: ada's email and Slack message, di's and bob's emails, and the
    // three alerts (which carry the failed notification's tracking id).
    // Not cy's email (550) nor bob's Slack message (channel_not_found).
    expect(rows.map((r) => `${r.channel} ${r.notification_id}`).sort()).toEqual(
      [
        `email ${ids.ada}`,
        `slack ${ids.ada}`,
        `email ${ids.di}`,
        `email ${ids.bob}`,
        `email ${ids.bob}`,
        `email ${ids.cy}`,
        `email ${ids.nobody}`,
        `email ${ids.eveV1}`,
        `email ${ids.eveV2}`,
      ].sort(),
    );
    const seconds = rows.map((r) => r.seconds);
    expect(seconds.every((s) => s >= 0)).toBe(true);
    expect(seconds).toEqual([...seconds].sort((a, b) => b - a));
  },

  "outcomes-per-day": async () => {
    const rows = await auditorRows<{ day: Date; status: string; notifications: number }>(docQuery("outcomes-per-day"));
    const perStatus: Record<string, number> = {};
    for (const r of rows) perStatus[r.status] = (perStatus[r.status] ?? 0) + r.notifications;
    expect(perStatus).toEqual({ sent: 4, partially_sent: 1, failed: 2, scheduled: 1, cancelled: 1 });
  },

  "notification-timeline": async () => {
    const rows = await auditorRows(docQuery("notification-timeline", [["7d1e4a52-2b61-4c3e-9a8f-5f0b8c6d2e10", ids.bob]]));
    const what = rows.map((r) => r.what);
    expect(what[0]).toBe("SendNotificationToEntityOp");
    expect(what).toEqual(
      expect.arrayContaining([
        "SendNotificationRequestedEvent",
        "SentOnSomePreparedChannelsEvent",
        "FailedToSendSlackMessageEvent",
        "SucceededInSendingEmailEvent",
        "AlertInternalTeamOp",
        "FailedNotificationSentToInternalTeamEvent",
        "fail: Running -> Failed",
      ]),
    );
    expect(rows.find((r) => r.what === "fail: Running -> Failed")).toMatchObject({ stream: "slack.operations", concern: "slack_bot", who: "slack_bot" });
    const times = rows.map((r) => r.at.getTime());
    expect(times).toEqual([...times].sort((a, b) => a - b));
  },

  "slack-errors": async () => {
    expect(await auditorRows(docQuery("slack-errors"))).toEqual([expect.objectContaining({ slack_error: "channel_not_found", messages: 1 })]);
  },

  "emails-with-retries": async () => {
    const rows = await auditorRows(docQuery("emails-with-retries"));
    expect(rows).toEqual([
      expect.objectContaining({ notification_id: ids.di, recipient: "di@example.com", status: "sent", attempts: 2, smtp_code: 250, last_error: expect.stringContaining("451") }),
    ]);
  },

  "notifications-of-entity": async () => {
    expect(await auditorRows(docQuery("notifications-of-entity"))).toEqual([
      expect.objectContaining({ tracking_id: ids.ada, subject: "Report for ada", status: "sent", failure_reason: null }),
    ]);
  },

  "template-version-on-day": async () => {
    const window = (from: Date, to: Date): Array<[string, string]> => [
      ["entity_id = 'ada'", "entity_id = 'eve'"],
      ["timestamptz '2026-03-03 00:00:00+00'", `timestamptz '${from.toISOString()}'`],
      ["timestamptz '2026-03-04 00:00:00+00'", `timestamptz '${to.toISOString()}'`],
    ];
    const all = await auditorRows(docQuery("template-version-on-day", window(new Date(Date.now() - 3_600_000), new Date(Date.now() + 60_000))));
    expect(all).toEqual([
      expect.objectContaining({ tracking_id: ids.eveV1, template_key: "report-ready", template_version: 1, template_locale: null, subject: "Report 1 is ready", status: "sent" }),
      expect.objectContaining({ tracking_id: ids.eveV2, template_key: "report-ready", template_version: 2, subject: "Your report 2 is ready", status: "sent" }),
    ]);
    // Asked about the time before version 2: version 1 only. eve's raw notifications (no template) are never listed.
    const before = await auditorRows(docQuery("template-version-on-day", window(new Date(Date.now() - 3_600_000), betweenTemplateVersions)));
    expect(before.map((r) => [r.tracking_id, r.template_version])).toEqual([[ids.eveV1, 1]]);
  },

  "scheduled-and-cancelled": async () => {
    const rows = await auditorRows(docQuery("scheduled-and-cancelled"));
    expect(rows).toHaveLength(2);
    const byId = new Map(rows.map((r) => [r.tracking_id, r]));
    expect(byId.get(ids.scheduled)).toMatchObject({ status: "scheduled", entity_id: "eve", subject: "Tomorrow's invoice", category: "billing", cancelled_at: null });
    expect(byId.get(ids.cancelled)).toMatchObject({ status: "cancelled", subject: "Tomorrow's offer", category: null, cancelled_at: expect.any(Date) });
    for (const r of rows) expect(r.send_at.toISOString()).toBe(SEND_AT);
  },

  "internal-alerts": async () => {
    const rows = await auditorRows(docQuery("internal-alerts"));
    expect(rows.map((r) => r.tracking_id).sort()).toEqual([ids.bob, ids.cy, ids.nobody].sort());
    for (const r of rows) expect(r).toMatchObject({ recipient: "oncall@example.test", alert_status: "sent" });
  },
};

describe("docs/audit.md", () => {
  it("has at least ten named queries, each checked here", () => {
    expect(DOC.size).toBeGreaterThanOrEqual(10);
    expect([...DOC.keys()].sort()).toEqual(Object.keys(DOC_CHECKS).sort());
    // The four questions the page starts with come first, in that order.
    expect([...DOC.keys()].slice(0, 4)).toEqual(["emails-to-address", "failed-yesterday", "entity-at", "redrives"]);
  });

  it("every documented query runs as written for the auditor", async () => {
    for (const [name, text] of DOC) {
      const rows = await auditorRows(text).catch((error: Error) => {
        throw new Error(`query ${name} of docs/audit.md failed: ${error.message}`);
      });
      expect(Array.isArray(rows)).toBe(true);
    }
  });

  it.each(Object.keys(DOC_CHECKS))("%s answers with the right rows", async (name) => {
    await DOC_CHECKS[name]!();
  });
});

// --- the views through the typed queries -------------------------------------------

describe("the audit views", () => {
  it("emails: a delivery refused with 550 is failed with the SMTP code and error", async () => {
    const [email] = await asAuditor(app.t.db, (tx) => findEmails(tx, { to: "cy@example.com" }));
    expect(email).toMatchObject({
      notification_id: ids.cy,
      operation_id: `${ids.cy}:email`,
      purpose: "notification",
      entity_id: "cy",
      recipients: ["cy@example.com"],
      status: "failed",
      handling_status: "ArchivedAfterFailure",
      attempts: 1,
      sent_at: null,
      smtp_code: 550,
      response: null,
    });
    expect(email!.failed_at).toBeInstanceOf(Date);
    expect(email!.last_error).toContain("550");
    // Filters narrow, they do not invent.
    expect(await asAuditor(app.t.db, (tx) => findEmails(tx, { to: "cy@example.com", status: "sent" }))).toEqual([]);
    expect(await asAuditor(app.t.db, (tx) => findEmails(tx, { to: "cy@example.com", since: new Date(Date.now() + 60_000) }))).toEqual([]);
  });

  it("slack_messages: the delivered message has its ts, the refused one Slack's error", async () => {
    const [sent] = await asAuditor(app.t.db, (tx) => findSlackMessages(tx, { channel: "U0ADA0001" }));
    expect(sent).toMatchObject({ notification_id: ids.ada, status: "sent", attempts: 1, slack_error: null, http_status: null });
    expect(sent!.ts).toEqual(expect.any(String));
    expect(sent!.posted_channel).toEqual(expect.any(String));
    const [refused] = await asAuditor(app.t.db, (tx) => findSlackMessages(tx, { channel: "#gone" }));
    expect(refused).toMatchObject({ notification_id: ids.bob, status: "failed", slack_error: "channel_not_found", ts: null, sent_at: null });
  });

  it("failures_waiting listed cy's email until the operator archived it", () => {
    expect(failuresBeforeArchive.map((f) => `${f.stream} ${f.concern} ${f.record_id}`).sort()).toEqual(
      [`email.operations email_bot ${ids.cy}`, `slack.operations slack_bot ${ids.bob}`].sort(),
    );
    expect(failuresBeforeArchive.find((f) => f.concern === "email_bot")!.error).toContain("550");
  });

  it("entity_versions: consecutive versions meet, valid_to of one is valid_from of the next", async () => {
    const versions = await asAuditor(app.t.db, (tx) => getEntityVersions(tx, "ada"));
    expect(versions).toHaveLength(2);
    expect(versions.map((v) => v.version)).toEqual([1, 2]);
    const { rows: records } = await app.t.query("select position from entity.events where id = 'ada' order by position");
    expect(versions.map((v) => v.position)).toEqual(records.map((r) => r.position));
    expect(versions[0]!.valid_to).toEqual(versions[1]!.valid_from);
    expect(versions[0]!.changed).toEqual(["kind", "name", "email", "slack", "preferences"]);
    expect(versions[1]!.changed).toEqual(["preferences"]);
    // JavaScript dates keep milliseconds, PostgreSQL microseconds: ask a millisecond later.
    const atChange = await asAuditor(app.t.db, (tx) => getEntityVersions(tx, "ada", new Date(versions[1]!.valid_from.getTime() + 1)));
    expect(atChange.map((v) => v.version)).toEqual([versions[1]!.version]);
  });

  it("notification detail: the notification, its emails (the alert too), Slack messages and handling changes", async () => {
    const detail = await asAuditor(app.t.db, (tx) => getNotificationDetail(tx, ids.bob));
    expect(detail!.notification).toMatchObject({ tracking_id: ids.bob, status: "partially_sent", sent_channels: ["email"] });
    expect(detail!.emails.map((e) => e.purpose)).toEqual(["notification", "internal_alert"]);
    expect(detail!.slackMessages.map((m) => m.status)).toEqual(["failed"]);
    const concerns = new Set(detail!.handlingChanges.map((c) => c.concern));
    for (const c of ["notification_bot", "email_bot", "slack_bot", "saga_bot", "reaction_bot", "internal_operation_bot"]) expect(concerns).toContain(c);
    expect(await asAuditor(app.t.db, (tx) => getNotificationDetail(tx, "no-such-notification"))).toBeNull();
  });

  it("redrives leaves out the bots and the runner (di's retry was the runner's)", async () => {
    const { rows } = await app.t.query("select count(*)::int as n from audit.handling_changes where record_id = $1 and actor = 'runner'", [ids.di]);
    expect(rows[0].n).toBe(1);
    const redrives = await asAuditor(app.t.db, (tx) => listRedrives(tx));
    expect(new Set(redrives.map((r) => r.actor))).toEqual(new Set(["alice"]));
    expect(await asAuditor(app.t.db, (tx) => listRedrives(tx, { actor: "bob" }))).toEqual([]);
  });

  it("notifications: an entity's notifications, newest first", async () => {
    const rows = await asAuditor(app.t.db, (tx) => findNotifications(tx, { entityId: "cy" }));
    expect(rows.map((r) => r.tracking_id)).toEqual([ids.cy]);
  });

  it("bad filters are refused with the field named, before any query", async () => {
    await expect(asAuditor(app.t.db, (tx) => findEmails(tx, { to: "" }))).rejects.toThrow(ValidationError);
    await expect(asAuditor(app.t.db, (tx) => findEmails(tx, { to: "a@b.c", since: "last tuesday" }))).rejects.toThrow(/since "last tuesday" is not an ISO 8601/);
    await expect(asAuditor(app.t.db, (tx) => findEmails(tx, { to: "a@b.c", limit: 0 }))).rejects.toThrow(/limit must be at least 1/);
    await expect(asAuditor(app.t.db, (tx) => findEmails(tx, { to: "a@b.c", since: "2026-11-26T10:00:00Z", until: "2026-11-26T09:00:00Z" }))).rejects.toThrow(
      /until must be later than since/,
    );
  });
});

// --- the auditor role ------------------------------------------------------------------

const AUDIT_VIEWS = [
  "emails",
  "entity_versions",
  "erasures",
  "failures_waiting",
  "handling_changes",
  "notifications",
  "projection_failures",
  "records",
  "redrives",
  "retention",
  "slack_messages",
  "webhook_deliveries",
  "webhook_endpoints",
];

/** Run one statement as tidings_auditor in a writable transaction, so only privileges can refuse it. */
const asAuditorRole = (statement: string) => inTransaction(app.t.db, "auditor", (tx) => sql.raw(statement).execute(tx));

describe("the tidings_auditor role", () => {
  it("cannot read the streams or their handling state directly", async () => {
    for (const table of [
      "notification.events",
      "email.operations",
      "email.operations__handling",
      "slack.events",
      "entity.events",
      "notification.client_operations__handling_history",
    ]) {
      await expect(asAuditorRole(`select * from ${table} limit 1`)).rejects.toMatchObject({ code: "42501" });
    }
  });

  it("cannot write anything: streams, handling, registry, the audit views, new objects", async () => {
    const attempts = [
      `insert into email.operations (id, type, payload) values ('x', 'SendEmailOp', '{}')`,
      `update email.operations__handling set last_reason = 'x'`,
      `insert into notification.events__handling (position, concern, status, last_action, last_actor, last_reason) values (1, 'projection_bot', 'Running', 'claim', 'x', 'x')`,
      `select tidings.append('notification.client_operations', '[{"id":"x","type":"SendNotificationToEntityOp","payload":{}}]'::jsonb)`,
      `select tidings.queue_handling('email.operations', 'email_bot', array[1]::bigint[])`,
      `select graphile_worker.add_job('email.operations:email_bot', '{}'::json)`,
      `insert into tidings.stream_concern_states (stream, concern, disabled, changed_by, reason) values ('email.operations', 'email_bot', true, 'x', 'x')`,
      `update tidings.streams set description = 'x'`,
      `create table audit.mine (a int)`,
      `create view audit.mine as select 1`,
      `select tidings.refresh_audit_views()`,
    ];
    for (const statement of attempts) {
      const refused = await asAuditorRole(statement).then(
        () => null,
        (error: { code?: string; message?: string }) => error,
      );
      expect({ statement, code: refused?.code, message: refused?.message }).toEqual({ statement, code: "42501", message: expect.stringMatching(/permission denied/) });
    }
    // The views cannot be written through either (PostgreSQL refuses before privileges matter).
    for (const statement of [`insert into audit.entity_versions (entity_id) values ('x')`, `update audit.emails set subject = 'x'`, `delete from audit.records`]) {
      await expect(asAuditorRole(statement)).rejects.toThrow(/cannot (insert into|update|delete from) view|permission denied/);
    }
  });

  it("reads every audit view, and the schema holds exactly the documented views", async () => {
    const { rows } = await app.t.query("select table_name from information_schema.views where table_schema = 'audit' order by 1");
    expect(rows.map((r) => r.table_name)).toEqual(AUDIT_VIEWS);
    // The flows above pass nothing over; one failure as the projection would record it.
    await app.t.query(`insert into tidings.checkpoint_failures (checkpoint, id, records, error) values ('notification_views', 'audit-test', '[]', 'cannot read this payload')`);
    // Nor do they erase anyone (test/int/erase.int.test.ts does); one erasure record as entity.erase_entity would append it.
    await app.t.query(
      `insert into entity.erasures (id, type, payload) values ('audit-test', 'EntityErasedEvent', '{"erasedBy": "test", "reason": "audit test", "notifications": [], "rows": {}}')`,
    );
    // Nothing is old enough for retention here; one act as npm run retention would record it.
    await app.t.query(`insert into tidings.retention_acts (run_id, kind, by, reason, cutoff, table_name, row_count, recorded_by)
      values (gen_random_uuid(), 'idempotency_keys', 'ops', 'test', now(), 'api.idempotency_keys', 0, 'postgres')`);
    for (const view of AUDIT_VIEWS) {
      // The webhook views hold rows only once an endpoint is registered: test/int/webhooks.int.test.ts reads them as the auditor.
      if (view.startsWith("webhook_")) continue;
      const result = await asAuditorRole(`select count(*)::int as n from audit.${view}`);
      expect((result.rows[0] as { n: number }).n).toBeGreaterThan(0);
    }
  });

  it("the views read the streams with their owner's rights (security_invoker off) on this server", async () => {
    const { rows } = await app.t.query(`
      select c.relname, c.reloptions, pg_get_userbyid(c.relowner) as owner
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'audit' and c.relkind = 'v' order by 1`);
    expect(rows.map((r) => r.relname)).toEqual(AUDIT_VIEWS);
    for (const r of rows) {
      expect(r.reloptions).toEqual(["security_invoker=false"]);
      expect(r.owner).not.toBe("tidings_auditor");
    }
  });

  it("every audit view and column is documented in the database", async () => {
    const { rows } = await app.t.query(`
      select c.relname, a.attname
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
      where n.nspname = 'audit' and col_description(c.oid, a.attnum) is null`);
    expect(rows).toEqual([]);
    const views = await app.t.query(`
      select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'audit' and obj_description(c.oid, 'pg_class') is null`);
    expect(views.rows).toEqual([]);
  });

  it("asAuditor acts as tidings_auditor in a read-only transaction", async () => {
    const role = await asAuditor(app.t.db, async (tx) => (await sql<{ r: string }>`select current_user as r`.execute(tx)).rows[0]!.r);
    expect(role).toBe("tidings_auditor");
    await expect(asAuditor(app.t.db, (tx) => sql`create temporary table scratch (a int)`.execute(tx))).rejects.toMatchObject({ code: "25006" });
  });
});

// --- the command line ----------------------------------------------------------------

const cli = (...args: string[]) => runScript("audit", args, { DATABASE_URL: app.t.url, LOG_LEVEL: "warn" }, 30_000);

describe("npm run audit", () => {
  it("emails --to ... --json prints the rows as JSON", async () => {
    const result = await cli("emails", "--to", "test@example.com", "--json");
    expect(result).toMatchObject({ code: 0, stderr: "" });
    const rows = JSON.parse(result.stdout);
    expect(rows).toEqual([expect.objectContaining({ notification_id: ids.ada, recipient: "test@example.com", status: "sent", smtp_code: 250 })]);
  });

  it("emails --to ... prints a table by default", async () => {
    const result = await cli("emails", "--to", "cy@example.com");
    expect(result.code).toBe(0);
    expect(result.stdout).toContain(ids.cy);
    expect(result.stdout).toMatch(/│ failed\s+│/);
    expect(result.stdout).toContain("(1 row)");
  });

  it("notification <id>, entity --at, failures and redrives answer like the views", async () => {
    const [detail, entity, failures, redrives] = await Promise.all([
      cli("notification", ids.bob, "--json"),
      cli("entity", "ada", "--at", beforePreferenceChange.toISOString(), "--json"),
      cli("failures", "--json"),
      cli("redrives", "--actor", "alice", "--json"),
    ]);
    expect(JSON.parse(detail.stdout)).toMatchObject({
      notification: { tracking_id: ids.bob, status: "partially_sent" },
      slackMessages: [{ slack_error: "channel_not_found" }],
      emails: [
        { purpose: "notification", status: "sent" },
        { purpose: "internal_alert", status: "sent" },
      ],
    });
    expect(JSON.parse(entity.stdout)).toEqual([expect.objectContaining({ entity_id: "ada", channels: ["email", "slack"], opted_out: [] })]);
    expect(JSON.parse(failures.stdout)).toEqual([expect.objectContaining({ stream: "slack.operations", record_id: ids.bob })]);
    expect(JSON.parse(redrives.stdout).map((r: { action: string }) => r.action)).toEqual(["enable_stream", "disable_stream", "archive_failure"]);
  });

  it("explains bad input and unknown ids with exit codes, and --help lists the options", async () => {
    const [badSince, unknown, help] = await Promise.all([
      cli("emails", "--to", "a@example.com", "--since", "yesterday"),
      cli("notification", "no-such-notification"),
      cli("emails", "--help"),
    ]);
    expect(badSince.code).toBe(2);
    expect(badSince.stderr).toContain('--since "yesterday" is not an ISO 8601');
    expect(badSince.stdout).toBe("");
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain('no notification has tracking id "no-such-notification"');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain("--to <address>");
    expect(help.stdout).toContain("--json");
  });
});

// --- generated from the registry --------------------------------------------------------

describe("views over every stream", () => {
  it("cover a stream declared later once tidings.refresh_audit_views() runs", async () => {
    const t = await createTestDatabase(4);
    try {
      await declareTestStream(t.adminDb, { stream: "testing.audit_probe", producer: "audit_probe_writer", consumer: "audit_probe_bot" });
      await asOwner(t.adminDb, (tx) => sql`select tidings.refresh_audit_views()`.execute(tx));
      const target = { stream: "testing.audit_probe", concern: "audit_probe_bot" };
      const { position } = await inTransaction(t.db, "audit_probe_writer", (tx) => appendOne(tx, "testing.audit_probe", { id: "probe-1", type: "Probe", payload: {} }));
      await inTransaction(t.db, "audit_probe_bot", async (tx) => {
        await claim(tx, { ...target, position }, { actor: "audit_probe_bot" });
        await transition(tx, { ...target, position }, "fail", { actor: "audit_probe_bot", reason: "probe failed", error: "boom" });
      });
      const read = (view: string) =>
        inTransaction(t.db, "auditor", async (tx) => (await sql.raw<any>(`select * from audit.${view} where stream = 'testing.audit_probe'`).execute(tx)).rows);
      expect(await read("records")).toEqual([expect.objectContaining({ record_id: "probe-1", record_type: "Probe" })]);
      expect((await read("handling_changes")).map((r) => r.action)).toEqual(["claim", "fail"]);
      expect(await read("failures_waiting")).toEqual([expect.objectContaining({ record_id: "probe-1", error: "boom" })]);
      expect(await read("redrives")).toEqual([]);

      // A person's re-drive shows; the new bot's own changes did not.
      await inTransaction(t.db, "operator", (tx) => transition(tx, { ...target, position }, "reset_failed", { actor: "bea", reason: "fixed the probe" }));
      expect(await read("redrives")).toEqual([expect.objectContaining({ actor: "bea", action: "reset_failed", record_id: "probe-1" })]);
    } finally {
      await t.close();
    }
  });
});
