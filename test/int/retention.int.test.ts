/**
 * `npm run retention`: partitions that ended before now − the period are
 * archived to gzip'd CSV (and load back into a table, row for row), then
 * detached and dropped, the act recorded; partitions holding records a saga
 * or an operator waits on are refused, naming them; idempotency keys expire
 * alike. Every refusal of the database is attacked by the role it refuses.
 *
 * Time: records are written now, and retention is about months ago. The
 * test moves the records written by the real workflow three months back
 * (as a superuser, triggers off: the one thing here no role of tidings can
 * do), as if they had been written then; everything after that is tidings's.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { sql } from "kysely";
import { from as copyFrom } from "pg-copy-streams";
import { inTransaction } from "../../src/db/database";
import { enqueueNotification } from "../../src/notification/enqueue";
import { createNotificationBot } from "../../src/notification/notification.bot";
import { Streams } from "../../src/notification/streams";
import { getLatestById } from "../../src/streams/read";
import type { RetentionReport } from "../../src/maintenance/retention";
import { waitFor } from "../helpers/db";
import { runScript } from "../helpers/scripts";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { startTestWorker } from "../helpers/worker";

let app: Tidings;
let dir: string;
const ended: string[] = [];
let gus: string;
let open: string;
let month: string; // the partitions three months back, e.g. 20260901

async function settled(): Promise<void> {
  await waitFor(
    async () => {
      const { rows } = await app.t.query<{ busy: string }>(`
        select (select count(*) from graphile_worker.jobs where run_at <= now() or locked_at is not null)
             + (select coalesce(sum(waiting), 0) from tidings.read_lag() where reader like 'checkpoint:%') as busy`);
      return Number(rows[0]!.busy) === 0;
    },
    { what: "the workflow to settle", timeoutMs: 30_000 },
  );
}

const rowsOf = async (query: string) => (await app.t.query<{ row: string }>(query)).rows.map((r) => r.row);

function retention(args: string[]) {
  return runScript("retention", ["--period", "2 months", "--dir", dir, "--json", ...args], { DATABASE_URL: app.t.url, LOG_LEVEL: "warn" });
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), "tidings-retention-"));
  app = await startTidings({ slack: { knownChannels: ["#general", "#alerts"] }, internalTeamSlackChannel: "#alerts" });
  await createEntity(app.t, "ada", person({ email: "ada@example.com", slack: "#general" }));
  await createEntity(app.t, "gus", person({ email: "gus@example.com", slack: "#gone" }));
  for (let i = 0; i < 3; i++) ended.push((await enqueueNotification(app.t.db, { entityId: "ada", subject: `Old ${i}`, text: "Long ago." })).trackingId);
  gus = (await enqueueNotification(app.t.db, { entityId: "gus", subject: "Old for gus", text: "Slack is gone." })).trackingId;
  for (const id of [...ended, gus]) await waitForOutcome(app.t, id);
  // Their sagas' deadlines pass (the deadline jobs run now rather than in a minute): the sagas end.
  await app.t.query(`update graphile_worker._private_jobs set run_at = now()
    where task_id in (select id from graphile_worker._private_tasks where identifier = 'notification.sagas:saga_bot')`);
  await settled();
  await app.worker!.stop();

  // A notification whose sends were prepared and never made: its saga still waits.
  const notificationBotOnly = await startTestWorker(app.t, [createNotificationBot()], app.deps);
  open = (await enqueueNotification(app.t.db, { entityId: "ada", subject: "Still open", text: "Waiting." })).trackingId;
  await waitFor(() => getLatestById(app.t.adminDb, Streams.emailOperations, open), { what: "the open notification's email operation" });
  await notificationBotOnly.stop();

  // Three months back, every partitioned table (see the top of this file).
  month = (await app.t.query<{ m: string }>("select to_char(date_trunc('month', now() at time zone 'UTC') - interval '3 months', 'YYYYMMDD') as m")).rows[0]!.m;
  const client = await app.t.adminPool.connect();
  try {
    // Created by the owner, as the maintenance job would have three months ago.
    await client.query("set role tidings_owner");
    await client.query(`
      select tidings.create_partition(table_name, m, m + interval '1 month')
      from tidings.partitioned_tables, (select date_trunc('month', now() at time zone 'UTC') at time zone 'UTC' - interval '3 months' as m) x
      where to_regclass(table_name || '_p${month}') is null`);
    await client.query("reset role");
    await client.query("set session_replication_role = replica");
    for (const { table_name } of (await client.query<{ table_name: string }>("select table_name from tidings.partitioned_tables")).rows) {
      await client.query(`update ${table_name} set recorded_at = recorded_at - interval '3 months'`);
    }
    await client.query("reset session_replication_role");
  } finally {
    client.release();
  }
  // Idempotency keys: one used three months ago for an ended notification
  // (expires), one as old for the open one and one used today (both kept).
  await app.t.query(
    `
    insert into api.idempotency_keys (scope, key, request_sha256, tracking_id, created_at) values
      ('api:test', 'old-ended', sha256('a'), $1, now() - interval '3 months'),
      ('api:test', 'old-open', sha256('b'), $2, now() - interval '3 months'),
      ('api:test', 'recent', sha256('c'), $1, now())`,
    [ended[0], open],
  );
}, 120_000);

afterAll(async () => {
  await app.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("npm run retention", () => {
  let beforeEvents: string[];
  let beforeEventHandling: string[];

  it("dry run: lists what it would archive and what it refuses and why, and changes nothing", async () => {
    beforeEvents = await rowsOf(`select to_jsonb(e)::text as row from email.events_p${month} e order by position`);
    beforeEventHandling = await rowsOf(
      `select to_jsonb(h)::text as row from email.events__handling h where position in (select position from email.events_p${month}) order by position, concern`,
    );
    expect(beforeEvents.length).toBeGreaterThan(0);
    expect(beforeEventHandling.length).toBeGreaterThan(0);

    const run = await retention([]);
    expect(run.code).toBe(1); // some partitions refused
    const report = JSON.parse(run.stdout) as RetentionReport;
    expect(report.dryRun).toBe(true);
    const names = report.candidates.map((c) => c.partition);
    expect(names).toEqual(expect.arrayContaining([`email.events_p${month}`, `notification.views_p${month}`, `slack.operations_p${month}`]));
    // Gus's Slack send failed and waits for an operator; the open notification's saga waits.
    const slackOps = report.refused.find((r) => r.partition === `slack.operations_p${month}`)!;
    expect(slackOps.heldRecords).toEqual(expect.arrayContaining([expect.objectContaining({ id: gus, concern: "slack_bot", why: "handling Failed for slack_bot" })]));
    const events = report.refused.find((r) => r.partition === `notification.events_p${month}`)!;
    expect(events.heldRecords).toEqual(expect.arrayContaining([expect.objectContaining({ id: open, why: `notification ${open} has not ended` })]));
    expect(report.refused.map((r) => r.partition)).not.toContain(`email.events_p${month}`);
    expect(report.idempotencyKeys).toBe(1);
    // Nothing happened.
    const { rows } = await app.t.query("select to_regclass($1) as p", [`email.events_p${month}`]);
    expect(rows[0].p).not.toBeNull();
    expect((await app.t.query("select count(*)::int as n from tidings.retention_acts")).rows[0].n).toBe(0);
  }, 60_000);

  it("--execute without a reason is refused", async () => {
    const run = await retention(["--execute"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/a reason is required/);
  }, 60_000);

  let report: RetentionReport;
  it("--execute: archives, drops and records the partitions nothing holds; the held ones stay", async () => {
    const run = await retention(["--execute", "--reason", "quarterly retention (TICKET-9)", "--actor", "ops-ann"]);
    expect(run.code).toBe(1);
    report = JSON.parse(run.stdout) as RetentionReport;
    const archived = report.archived.map((a) => a.partition);
    expect(archived).toEqual(expect.arrayContaining([`email.events_p${month}`, `notification.views_p${month}`, `notification.snapshots_p${month}`]));
    expect(archived).not.toContain(`slack.operations_p${month}`);
    expect(archived).not.toContain(`notification.events_p${month}`);
    for (const partition of archived) expect((await app.t.query("select to_regclass($1) as p", [partition])).rows[0].p).toBeNull();
    for (const r of report.refused) expect((await app.t.query("select to_regclass($1) as p", [r.partition])).rows[0].p).not.toBeNull();

    // The act, as the audit sees it: who, why, which partitions, files and rows.
    const acts = await inTransaction(app.t.db, "auditor", async (tx) => (await sql<Record<string, unknown>>`select * from audit.retention order by entry`.execute(tx)).rows);
    const partitionActs = acts.filter((a) => a.kind === "partition");
    expect(partitionActs.map((a) => a.partition).sort()).toEqual([...archived].sort());
    for (const a of report.archived) {
      const act = partitionActs.find((x) => x.partition === a.partition)!;
      expect(act).toMatchObject({ by: "ops-ann", reason: "quarterly retention (TICKET-9)", run_id: report.runId, file: path.basename(a.file), row_count: a.rows });
      expect(act.database_role).toMatch(/as tidings_operator$/);
      // The file is what the act says it is.
      expect(
        createHash("sha256")
          .update(await readFile(a.file))
          .digest("hex"),
      ).toBe(act.sha256);
    }
    expect(acts.filter((a) => a.kind === "idempotency_keys")).toEqual([expect.objectContaining({ row_count: 1, by: "ops-ann" })]);
    const keys = await app.t.query<{ key: string }>("select key from api.idempotency_keys order by key");
    expect(keys.rows.map((k) => k.key)).toEqual(["old-open", "recent"]);
    expect((await stat(path.join(report.directory!, "manifest.json"))).isFile()).toBe(true);
    // The dropped records' handling rows went with them; the refused partitions' failures still wait.
    expect((await app.t.query("select count(*)::int as n from email.events__handling")).rows[0].n).toBe(0);
    const failures = await app.t.query("select record_id from audit.failures_waiting where stream = 'slack.operations'");
    expect(failures.rows.map((r) => r.record_id)).toContain(gus);
  }, 60_000);

  it("an archive loads back into a table, row for row (records and their handling)", async () => {
    const archived = report.archived.find((a) => a.partition === `email.events_p${month}`)!;
    const client = await app.t.adminPool.connect();
    try {
      await client.query("create table restored_events (like email.events)");
      await client.query("create table restored_handling (like email.events__handling)");
      await pipeline(createReadStream(archived.file), createGunzip(), client.query(copyFrom("copy restored_events from stdin with (format csv, header true)")));
      await pipeline(createReadStream(archived.handlingFile!), createGunzip(), client.query(copyFrom("copy restored_handling from stdin with (format csv, header true)")));
    } finally {
      client.release();
    }
    expect(await rowsOf("select to_jsonb(e)::text as row from restored_events e order by position")).toEqual(beforeEvents);
    expect(await rowsOf("select to_jsonb(h)::text as row from restored_handling h order by position, concern")).toEqual(beforeEventHandling);
    expect(archived.rows).toBe(beforeEvents.length);
  });

  it("a second run finds only the refused partitions again", async () => {
    const run = await retention([]);
    const again = JSON.parse(run.stdout) as RetentionReport;
    expect(again.candidates.map((c) => c.partition).sort()).toEqual(report.refused.map((r) => r.partition).sort());
  }, 60_000);

  it("notifications still flow afterwards", async () => {
    await app.startWorker();
    const id = (await enqueueNotification(app.t.db, { entityId: "ada", subject: "After retention", text: "Still here." })).trackingId;
    expect((await waitForOutcome(app.t, id)).type).toBe("SentOnAllPreparedChannelsEvent");
  });
});

describe("the database's side of retention, attacked", () => {
  const call = (actor: string | null, partition: string, archive: object, cutoff = "now()") =>
    inTransaction(app.t.db, actor, (tx) =>
      sql`select tidings.drop_archived_partition(gen_random_uuid(), ${partition}, ${sql.raw(cutoff)}, 'mallory', 'because', ${JSON.stringify(archive)}::jsonb)`.execute(tx),
    );

  it("only the operator may drop a partition: the service itself, a bot and the reader are refused", async () => {
    for (const actor of [null, "email_bot", "reader", "auditor"]) {
      await expect(call(actor, `slack.operations_p${month}`, { rows: 0 })).rejects.toThrow(/permission denied/);
    }
  });

  it("the operator cannot drop a partition holding records still waited on, even with the right counts", async () => {
    const partition = `slack.operations_p${month}`;
    const rows = (await app.t.query(`select count(*)::int as n from ${partition}`)).rows[0].n;
    const handlingRows = (await app.t.query(`select count(*)::int as n from slack.operations__handling where position in (select position from ${partition})`)).rows[0].n;
    await expect(call("operator", partition, { rows, handlingRows })).rejects.toThrow(new RegExp(`still waited on: .*${gus}`));
  });

  it("the operator cannot drop a partition whose archive does not hold every row, nor one that ends after the cutoff", async () => {
    const partition = `email.operations_p${month}`;
    const rows = (await app.t.query(`select count(*)::int as n from ${partition}`)).rows[0].n;
    // email.operations of this month holds the open notification's operation: refused for that first.
    await expect(call("operator", partition, { rows: rows - 1, handlingRows: 0 })).rejects.toThrow(/still waited on|rows/);
    const current = (await app.t.query("select partition from tidings.stream_partitions where table_name = 'email.events' and range_to > now() order by range_from limit 1"))
      .rows[0].partition;
    await expect(call("operator", current, { rows: 0, handlingRows: 0 })).rejects.toThrow(/after the cutoff/);
    await expect(call("operator", current, { rows: 0, handlingRows: 0 }, "now() + interval '1 year'")).rejects.toThrow(/in the future/);
  });

  it("the record of the acts is append-only, and handling rows stay undeletable after a drop", async () => {
    await expect(app.t.query("update tidings.retention_acts set reason = 'nothing to see'")).rejects.toThrow(/append-only/);
    await expect(app.t.query("delete from tidings.retention_acts")).rejects.toThrow(/append-only/);
    await expect(app.t.query("delete from slack.operations__handling")).rejects.toThrow(/append-only/);
    await expect(inTransaction(app.t.db, "operator", (tx) => sql`delete from slack.operations__handling`.execute(tx))).rejects.toThrow(/permission denied/);
    await expect(inTransaction(app.t.db, "operator", (tx) => sql`select api.expire_idempotency_keys(gen_random_uuid(), now(), 'mallory', '')`.execute(tx))).rejects.toThrow(
      /needs who and why/,
    );
    await expect(inTransaction(app.t.db, "reader", (tx) => sql`select api.expire_idempotency_keys(gen_random_uuid(), now(), 'mallory', 'x')`.execute(tx))).rejects.toThrow(
      /permission denied/,
    );
  });
});
