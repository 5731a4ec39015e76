/**
 * Migration 0005 converts a populated database: the largest streams and
 * their handling histories become partitioned by recorded_at. Every audit
 * question answers the same before and after, the feed reads the same
 * records, new notifications flow, the re-drive tools act, the promises of
 * the stream tables hold on the partitions, and the maintenance job (the
 * workers' cron task) creates the partitions ahead.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { sql } from "kysely";
import { allBots, scheduledTasks, type BotDeps } from "../../src/composition";
import { startWorker, type TidingsWorker } from "../../src/bots/worker";
import { createDb, createPool, inTransaction, type Db } from "../../src/db/database";
import { listMigrations } from "../../src/db/migrate";
import { loginOf, prepareDatabase } from "../../src/db/roles";
import { createEmailTransport } from "../../src/email/transport";
import { putEntity } from "../../src/entities/entity.repository";
import { enqueueNotification } from "../../src/notification/enqueue";
import { Streams } from "../../src/notification/streams";
import { createSlackPoster } from "../../src/slack/client";
import { FEED_START, getLatestById, readAfter } from "../../src/streams/read";
import { runAction } from "../../src/admin/redrive";
import { asAuditor, findEmails, findNotifications, findSlackMessages, getEntityVersions, getNotificationDetail, listFailuresWaiting, listRedrives } from "../../src/audit/queries";
import { PARTITIONS_TASK } from "../../src/maintenance/partitions";
import { databaseUrl, serviceUrl, waitFor } from "../helpers/db";
import { OUTCOME_TYPES, person } from "../helpers/tidings";
import { startSlackStandIn, type SlackStandIn } from "../helpers/slackStandIn";
import { startSmtpServer, type TestSmtpServer } from "../helpers/smtpServer";
import { testLogger } from "../helpers/worker";

const name = `tidings_t_${process.env.TIDINGS_TEST_RUN_ID}_part_${randomBytes(3).toString("hex")}`;
const PARTITIONED = [
  "notification.events",
  "notification.views",
  "notification.snapshots",
  "notification.sagas",
  "email.operations",
  "email.events",
  "slack.operations",
  "slack.events",
];

let admin: pg.Pool;
let pool: pg.Pool;
let db: Db;
let adminDb: Db;
let smtp: TestSmtpServer;
let slack: SlackStandIn;
let deps: BotDeps & { close(): Promise<void> };
let worker: TidingsWorker | null = null;

async function startWorkers(): Promise<TidingsWorker> {
  return startWorker({
    pool,
    db,
    bots: allBots(),
    runtime: { db, deps, logger: testLogger, settings: { maxAttempts: 3, retryBaseMs: 50, retryMaxMs: 1_000 } },
    settings: { concurrency: 8, pollIntervalMs: 100, leaseMs: 30_000, catchUpIdleMs: 25, sweepMs: 86_400_000 },
    logger: testLogger,
    scheduled: scheduledTasks(db, testLogger),
  });
}

/** Migrate as a user does (a superuser's URL, the service login), up to a migration or to the end. */
async function migrateTo(upTo?: number): Promise<void> {
  await prepareDatabase(databaseUrl(name), { serviceLogin: loginOf(serviceUrl(name)), ...(upTo === undefined ? {} : { upTo }) });
}

async function outcome(id: string) {
  return waitFor(() => getLatestById(adminDb, Streams.notificationEvents, id, { types: OUTCOME_TYPES }), { what: `the outcome of ${id}`, timeoutMs: 30_000 });
}

/** No job due or running, and the projection has read every record. */
async function settled(): Promise<void> {
  await waitFor(
    async () => {
      const { rows } = await admin.query<{ busy: number }>(`
        select (select count(*) from graphile_worker.jobs where run_at <= now() or locked_at is not null)
             + (select coalesce(sum(waiting), 0) from tidings.read_lag() where reader like 'checkpoint:%') as busy`);
      return Number(rows[0]!.busy) === 0;
    },
    { what: "the workflow to settle", timeoutMs: 30_000 },
  );
}

/** Every audit view's rows, and the typed questions of src/audit/queries.ts. */
async function auditAnswers(ids: string[], entities: string[]) {
  const { rows: views } = await admin.query<{ name: string }>(
    "select table_schema || '.' || table_name as name from information_schema.views where table_schema = 'audit' and table_name <> 'retention' order by 1",
  );
  const everyView: Record<string, string[]> = {};
  for (const v of views) {
    const { rows } = await admin.query<{ row: string }>(`select to_jsonb(v)::text as row from ${v.name} v`);
    everyView[v.name] = rows.map((r) => r.row).sort();
  }
  const questions = await asAuditor(db, async (tx) => ({
    notifications: await findNotifications(tx, { limit: 1000 }),
    details: await Promise.all(ids.map((id) => getNotificationDetail(tx, id))),
    emails: await findEmails(tx, { to: "ada@example.com", limit: 1000 }),
    slack: await findSlackMessages(tx, { channel: "#general", limit: 1000 }),
    gone: await findSlackMessages(tx, { channel: "#gone", limit: 1000 }),
    failures: await listFailuresWaiting(tx, { limit: 1000 }),
    versions: await Promise.all(entities.map((e) => getEntityVersions(tx, e))),
    redrives: await listRedrives(tx, { limit: 1000 }),
  }));
  return { everyView, questions };
}

async function feed(stream: string) {
  const read = await inTransaction(db, "reader", (tx) => readAfter(tx, stream, FEED_START, { limit: 10_000 }));
  return read.records.map((r) => `${r.position} ${r.id} ${r.type}`);
}

const ids: string[] = [];
const gusIds: string[] = [];
const entities = ["ada", "flo", "gus", "olga"];
let before: Awaited<ReturnType<typeof auditAnswers>>;
let feedBefore: string[];

beforeAll(async () => {
  const c = new pg.Client({ connectionString: process.env.TIDINGS_TEST_SERVER_URL });
  await c.connect();
  await c.query(`create database ${name}`);
  await c.end();
  // The database as the migration before this one left it (0004, or 0003 where 0004 is not there).
  const earlier = (await listMigrations()).filter((m) => !m.file.endsWith("_partitions.sql")).map((m) => m.id);
  const partitionsId = (await listMigrations()).find((m) => m.file.endsWith("_partitions.sql"))!.id;
  await migrateTo(Math.max(...earlier.filter((id) => id < partitionsId)));
  admin = createPool(databaseUrl(name), 4, "partitions-test-admin");
  adminDb = createDb(admin);
  // Today's bots on that older schema (the service itself refuses a schema that
  // is not current): 0016's tidings.unqueue_handling stands in as "every job
  // held", so the deadline jobs stay queued as they did before 0016. Dropped
  // before migrating on.
  await admin.query(`create function tidings.unqueue_handling(p_stream text, p_concern text, p_positions bigint[]) returns bigint[]
                     language sql as $$ select coalesce(p_positions, '{}') $$`);
  await admin.query("grant execute on function tidings.unqueue_handling(text, text, bigint[]) to tidings_saga_bot");
  pool = createPool(serviceUrl(name), 20, "partitions-test");
  db = createDb(pool);

  smtp = await startSmtpServer();
  slack = await startSlackStandIn({ knownChannels: ["#general", "#alerts"] });
  const transport = createEmailTransport({ smtpUrl: smtp.url, from: "tidings <tidings@example.test>", sinkDir: "/nonexistent", maxConnections: 2 });
  deps = {
    email: { transport, from: "tidings <tidings@example.test>" },
    slack: { poster: createSlackPoster({ token: slack.token, apiUrl: slack.apiUrl, sinkFile: "/nonexistent", logger: testLogger }) },
    notification: {
      sagaDeadlineMs: 60_000,
      internalTeamEmail: "oncall@example.test",
      internalTeamSlackChannel: "#alerts",
      alertOnNotSent: false,
      snapshotEvery: 3,
      messageIdDomain: "example.test",
    },
    close: async () => transport.close?.(),
  };

  // Real notifications through the workflow: sent on both channels, a
  // fallback, one channel failing (left Failed for an operator), opted out.
  await putEntity(db, "ada", person({ name: "Ada", email: "ada@example.com", slack: "#general" }), "test");
  await putEntity(
    db,
    "flo",
    person({ name: "Flo", email: "flo@example.com", slack: "#gone", preferences: { channels: ["slack", "email"], optedOut: [], delivery: "fallback" } }),
    "test",
  );
  await putEntity(db, "gus", person({ name: "Gus", email: "gus@example.com", slack: "#gone" }), "test");
  await putEntity(db, "olga", person({ name: "Olga", preferences: { channels: ["email"], optedOut: ["email", "slack"], delivery: "all" } }), "test");
  worker = await startWorkers();
  for (const [entityId, n] of [
    ["ada", 4],
    ["flo", 1],
    ["gus", 2],
    ["olga", 1],
  ] as const) {
    for (let i = 0; i < n; i++) {
      const { trackingId } = await enqueueNotification(db, { entityId, subject: `For ${entityId} ${i}`, text: "Hello from tidings." });
      ids.push(trackingId);
      if (entityId === "gus") gusIds.push(trackingId);
    }
  }
  for (const id of ids) await outcome(id);
  await settled();
  await worker.stop();
  worker = null;

  before = await auditAnswers(ids, entities);
  feedBefore = await feed(Streams.notificationEvents);
  await admin.query("drop function tidings.unqueue_handling(text, text, bigint[])");
  await migrateTo();
  // The service starts again on the migrated schema (it refuses one that is not
  // current): new connections, whose prepared statements see the new tables.
  await db.destroy();
  pool = createPool(serviceUrl(name), 20, "partitions-test");
  db = createDb(pool);
}, 120_000);

afterAll(async () => {
  await worker?.stop();
  await deps?.close();
  await smtp?.close();
  await slack?.close();
  await db?.destroy();
  await adminDb?.destroy();
  const c = new pg.Client({ connectionString: process.env.TIDINGS_TEST_SERVER_URL });
  await c.connect();
  await c.query(`drop database if exists ${name} with (force)`);
  await c.end();
});

/** `after` with only the object keys `before` has, all the way down: what a later migration added (a column) is left out. */
function onlyKeysOf(before: unknown, after: unknown): unknown {
  if (Array.isArray(before) && Array.isArray(after)) return after.map((a, i) => onlyKeysOf(before[i], a));
  if (before && after && typeof before === "object" && typeof after === "object" && !(before instanceof Date) && !Array.isArray(before)) {
    return Object.fromEntries(
      Object.entries(after)
        .filter(([k]) => k in before)
        .map(([k, v]) => [k, onlyKeysOf((before as Record<string, unknown>)[k], v)]),
    );
  }
  return after;
}

describe("migration 0005 on a populated database", () => {
  it("partitions the largest streams and their handling histories by recorded_at", async () => {
    const { rows } = await admin.query<{ name: string }>(`
      select n.nspname || '.' || c.relname as name from pg_partitioned_table p
      join pg_class c on c.oid = p.partrelid join pg_namespace n on n.oid = c.relnamespace order by 1`);
    expect(rows.map((r) => r.name)).toEqual([...PARTITIONED, ...PARTITIONED.map((s) => `${s}__handling_history`), "notification.client_operations__handling_history"].sort());
    // The records were moved with their positions into the current month's partition.
    const { rows: where } = await admin.query<{ partition: string; n: number }>(
      "select tableoid::regclass::text as partition, count(*)::int as n from email.operations group by 1",
    );
    const month = (await admin.query<{ m: string }>("select to_char(now() at time zone 'UTC', 'YYYYMM') || '01' as m")).rows[0]!.m;
    expect(where).toEqual([{ partition: `email.operations_p${month}`, n: expect.any(Number) }]);
  });

  it("answers every audit question the same as before", async () => {
    const after = await auditAnswers(ids, entities);
    expect(Object.keys(after.everyView).length).toBeGreaterThanOrEqual(9);
    // Views of later migrations (e.g. 0007's webhooks) are new, and later migrations may add columns (0008's
    // send_at, category, template): every view there was answers the same in every column it had.
    expect(Object.keys(after.everyView)).toEqual(expect.arrayContaining(Object.keys(before.everyView)));
    const columnsBefore = (v: string) => new Set(before.everyView[v]!.flatMap((r) => Object.keys(JSON.parse(r) as object)));
    const only = (v: string, rows: readonly string[]) =>
      rows
        .map((r) =>
          JSON.stringify(
            Object.entries(JSON.parse(r) as object)
              .filter(([k]) => columnsBefore(v).has(k))
              .sort(([a], [b]) => (a < b ? -1 : 1)),
          ),
        )
        .sort();
    const views = Object.keys(before.everyView);
    expect(Object.fromEntries(views.map((v) => [v, only(v, after.everyView[v]!)]))).toEqual(Object.fromEntries(views.map((v) => [v, only(v, before.everyView[v]!)])));
    expect(onlyKeysOf(before.questions, after.questions)).toEqual(before.questions);
    // Not an empty comparison: the populated workflow is there.
    expect(before.questions.notifications.map((n) => n.status).sort()).toEqual(expect.arrayContaining(["not_sent", "partially_sent", "sent"]));
    expect(before.questions.failures.length).toBeGreaterThan(0);
  });

  it("reads the same records in the feed, from the same cursor", async () => {
    expect(await feed(Streams.notificationEvents)).toEqual(feedBefore);
  });

  it("keeps the append-only guard on the stream and on each partition, and gives no one a partition", async () => {
    const month = (await admin.query<{ m: string }>("select to_char(now() at time zone 'UTC', 'YYYYMM') || '01' as m")).rows[0]!.m;
    // As a superuser (grants do not stop it; the triggers do).
    await expect(admin.query("update email.operations set type = 'SendEmailOp'")).rejects.toThrow(/append-only/);
    await expect(admin.query(`update email.operations_p${month} set type = 'SendEmailOp'`)).rejects.toThrow(/append-only/);
    await expect(admin.query(`delete from email.operations__handling_history_p${month}`)).rejects.toThrow(/append-only/);
    await expect(admin.query(`truncate email.operations_p${month}`)).rejects.toThrow(/append-only/);
    // A reader reads the stream through its parent, never a partition directly.
    await expect(inTransaction(db, "reader", (tx) => sql`select count(*) from email.operations`.execute(tx))).resolves.toBeTruthy();
    await expect(inTransaction(db, "reader", (tx) => sql.raw(`select count(*) from email.operations_p${month}`).execute(tx))).rejects.toThrow(/permission denied/);
    // A producer still writes the content columns only: no position of its choosing.
    await expect(
      inTransaction(db, "email_bot", (tx) =>
        sql`insert into email.events (position, id, type, payload) overriding system value values (1, 'x', 'SendEmailRequestedEvent', '{}')`.execute(tx),
      ),
    ).rejects.toThrow(/permission denied/);
  });

  it("lets a later migration declare a new record type on a partitioned stream (tidings.declare_record_types)", async () => {
    const client = await admin.connect();
    try {
      await client.query("begin");
      await client.query("set local role tidings_owner");
      await client.query("select tidings.declare_record_types('email.events', array['SendEmailReadEvent'])");
      await client.query("insert into email.events (id, type, payload) values ('x', 'SendEmailReadEvent', '{}')");
      await expect(client.query("insert into email.events (id, type, payload) values ('x', 'NotDeclaredEvent', '{}')")).rejects.toThrow(/declared_type/);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });

  it("lets new notifications flow, and the re-drive tools act on records written before and after", async () => {
    worker = await startWorkers();
    const ada = (await enqueueNotification(db, { entityId: "ada", subject: "After partitioning", text: "Still here." })).trackingId;
    const gus = (await enqueueNotification(db, { entityId: "gus", subject: "Gus after", text: "Slack is gone." })).trackingId;
    expect((await outcome(ada)).type).toBe("SentOnAllPreparedChannelsEvent");
    expect((await outcome(gus)).type).toBe("SentOnSomePreparedChannelsEvent");
    await waitFor(async () => smtp.messages.some((m) => m.subject === "After partitioning"), { what: "the email after partitioning" });
    // The same positions continue: the new records come after the old ones.
    const { rows } = await admin.query<{ old: number; new: number }>(
      "select max(position) filter (where id = any ($2)) as old, min(position) filter (where id = $1) as new from email.operations",
      [ada, ids],
    );
    expect(rows[0]!.new).toBeGreaterThan(rows[0]!.old);

    // An operator archives the failed Slack sends of gus's notifications, old and new.
    await settled();
    const report = await runAction(db, "archive-failed", { stream: "slack.operations", entity: "gus" }, { execute: true, reason: "channel removed", actor: "ops-ann" });
    expect(report.changed).toBeGreaterThanOrEqual(3);
    const redrives = await asAuditor(db, (tx) => listRedrives(tx, { actor: "ops-ann" }));
    expect(redrives).toHaveLength(report.changed);
    const failures = await asAuditor(db, (tx) => listFailuresWaiting(tx, { stream: "slack.operations" }));
    expect(failures.filter((f) => [gus, ...gusIds].includes(f.record_id ?? ""))).toEqual([]);
    expect(failures.length).toBeGreaterThan(0); // flo's, left to another day
  }, 60_000);

  it("creates next month's partitions when the maintenance job runs (a job of the workers' cron)", async () => {
    worker ??= await startWorkers();
    const next = (await admin.query<{ m: string }>("select to_char(date_trunc('month', now() at time zone 'UTC') + interval '1 month', 'YYYYMMDD') as m")).rows[0]!.m;
    // The cron line is registered with graphile-worker.
    const known = await admin.query("select 1 from graphile_worker._private_known_crontabs where identifier = $1", [PARTITIONS_TASK]);
    expect(known.rowCount).toBe(1);
    // Next month's partitions gone (empty: nothing is recorded in the future), the job brings them back.
    for (const table of ["email.operations", "email.events__handling_history"]) await admin.query(`drop table ${table}_p${next}`);
    await admin.query("select graphile_worker.add_job($1)", [PARTITIONS_TASK]);
    await waitFor(
      async () => {
        const { rows } = await admin.query<{ a: string | null; b: string | null }>(
          `select to_regclass('email.operations_p${next}')::text as a, to_regclass('email.events__handling_history_p${next}')::text as b`,
        );
        return rows[0]!.a !== null && rows[0]!.b !== null;
      },
      { what: "next month's partitions" },
    ).catch(async (error: unknown) => {
      const { rows } = await admin.query("select task_identifier, attempts, last_error from graphile_worker.jobs");
      throw new Error(`${String(error)}: ${JSON.stringify(rows)}`);
    });
    // Guarded like the others.
    await expect(admin.query(`update email.operations_p${next} set type = 'x'`)).rejects.toThrow(/append-only/);
  });
});
