/**
 * Partitions and retention (migrations/0005_partitions.sql) open doors no
 * other part of tidings has: creating tables, detaching and dropping them,
 * and deleting idempotency keys. Each door is attacked here by every actor
 * and login that must be refused: the service's own maintenance job may
 * create partitions, the operator alone may archive and drop, the auditor
 * alone reads the record of it, and nobody writes that record by hand.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
let actors: string[] = [];
beforeAll(async () => {
  t = await createTestDatabase(4);
  actors = (await t.query<{ name: string }>("select name from tidings.actors order by name")).rows.map((r) => r.name);
});
afterAll(async () => {
  await t?.close();
});

const as = (actor: string | null, statement: string) => inTransaction(t.db, actor, (tx) => sql.raw(statement).execute(tx));

/** Every actor but the ones named, and the service login acting as no actor unless it is named (null). */
const allBut = (...allowed: Array<string | null>) => [...actors, null].filter((a) => !allowed.includes(a));

/** A notification-events partition that ended before now, created by the owner as the maintenance job would have: what retention would drop. */
async function oldPartition(): Promise<string> {
  const client = await t.adminPool.connect();
  try {
    await client.query("set role tidings_owner");
    const { rows } = await client.query<{ partition: string }>(
      `select tidings.create_partition('notification.events', date_trunc('month', now()) - interval '3 months', date_trunc('month', now()) - interval '2 months') as partition`,
    );
    return rows[0]!.partition;
  } finally {
    await client.query("reset role");
    client.release();
  }
}

async function retentionActs(): Promise<number> {
  return (await t.query<{ n: number }>("select count(*)::int as n from tidings.retention_acts")).rows[0]!.n;
}

describe("creating partitions ahead", () => {
  it("is the service's maintenance job's (the service login, as no actor)", async () => {
    await expect(as(null, "select * from tidings.create_stream_partitions()")).resolves.toBeDefined();
  });

  it("is refused to every actor, and to SQL logins of clients and auditors", async () => {
    for (const actor of actors) {
      await expect(as(actor, "select * from tidings.create_stream_partitions()")).rejects.toThrow(/permission denied/);
      await expect(as(actor, "select tidings.create_partition('notification.events', now() + interval '1 year', now() + interval '13 months')")).rejects.toThrow(
        /permission denied/,
      );
    }
    for (const grants of [["tidings_client"], ["tidings_auditor"]]) {
      const login = await t.createLogin({ prefix: "partitioner", grants });
      await expect(login.pool.query("select * from tidings.create_stream_partitions()")).rejects.toThrow(/permission denied/);
    }
  });

  it("the settings that shape it are the owner's: nobody else changes how far ahead or how wide", async () => {
    for (const actor of [...actors, null]) {
      await expect(as(actor, "update tidings.settings set value = '0' where name = 'partitions_ahead'")).rejects.toThrow(/permission denied/);
      await expect(as(actor, "update tidings.partitioned_tables set partition_interval = interval '1 day'")).rejects.toThrow(/permission denied/);
    }
  });
});

describe("archiving and dropping a partition", () => {
  let partition = "";
  beforeAll(async () => {
    partition = await oldPartition();
  });

  it("the operator may see what retention would take and how to archive it", async () => {
    const candidates = await as("operator", "select partition from tidings.retention_candidates(now())");
    expect(candidates.rows).toContainEqual({ partition });
    const queries = await as("operator", `select * from tidings.archive_queries('${partition}')`);
    expect(queries.rows).toHaveLength(1);
  });

  it("no other actor, nor the service login, nor a SQL client or auditor may list, archive, drop or expire anything", async () => {
    const attempts = [
      "select * from tidings.retention_candidates(now())",
      `select * from tidings.archive_queries('${partition}')`,
      `select tidings.drop_archived_partition(gen_random_uuid(), '${partition}', now(), 'mallory', 'because', '{"rows": 0, "handlingRows": 0}')`,
      "select api.expire_idempotency_keys(gen_random_uuid(), now(), 'mallory', 'because')",
      "select * from tidings.partition_holds('notification.events'::regclass)",
      "select notification.open_notifications(array['any'])",
    ];
    for (const actor of allBut("operator")) {
      for (const attempt of attempts) await expect(as(actor, attempt)).rejects.toThrow(/permission denied/);
    }
    for (const grants of [["tidings_client"], ["tidings_auditor"]]) {
      const login = await t.createLogin({ prefix: "dropper", grants });
      for (const attempt of attempts) await expect(login.pool.query(attempt)).rejects.toThrow(/permission denied/);
    }
    // What retention asks of the notifications is the owner's own, not even the operator's to call.
    await expect(as("operator", "select notification.open_notifications(array['any'])")).rejects.toThrow(/permission denied/);
    const still = await t.query("select 1 from tidings.stream_partitions where partition = $1", [partition]);
    expect(still.rowCount).toBe(1);
  });

  it("the operator may not drop what has not ended before the cutoff, nor name a table that is not a stream's partition", async () => {
    const current = (
      await t.query<{ partition: string }>(
        "select partition from tidings.stream_partitions where table_name = 'notification.events' and range_to > now() order by range_from limit 1",
      )
    ).rows[0]!.partition;
    await expect(
      as("operator", `select tidings.drop_archived_partition(gen_random_uuid(), '${current}', now(), 'mallory', 'because', '{"rows": 0, "handlingRows": 0}')`),
    ).rejects.toThrow(/after the cutoff/);
    await expect(
      as("operator", `select tidings.drop_archived_partition(gen_random_uuid(), '${partition}', now() + interval '1 day', 'mallory', 'because', '{"rows": 0}')`),
    ).rejects.toThrow(/in the future/);
    for (const name of ["notification.events", "tidings.retention_acts", "api.idempotency_keys", "x'; drop table tidings.retention_acts; --"]) {
      await expect(
        as("operator", `select tidings.drop_archived_partition(gen_random_uuid(), '${name.replace(/'/g, "''")}', now(), 'mallory', 'because', '{"rows": 0}')`),
      ).rejects.toThrow(/is not a partition of a partitioned stream/);
      await expect(as("operator", `select * from tidings.archive_queries('${name.replace(/'/g, "''")}')`)).rejects.toThrow(/is not a partition of a partitioned stream/);
    }
    expect(await t.query("select 1 from tidings.retention_acts")).toMatchObject({ rowCount: 0 });
  });

  it("an archive whose count is not the partition's is refused: what is dropped is what was archived", async () => {
    await expect(
      as("operator", `select tidings.drop_archived_partition(gen_random_uuid(), '${partition}', now(), 'mallory', 'because', '{"rows": 5, "handlingRows": 0}')`),
    ).rejects.toThrow(/has 0 rows, the archive/);
    expect(await retentionActs()).toBe(0);
  });
});

describe("the record of retention", () => {
  it("is written only by retention's own functions: no actor inserts, changes or removes an act, not even the owner", async () => {
    const row = "(gen_random_uuid(), 'partition', 'mallory', 'forged', now(), 0, 'x')";
    for (const actor of [...actors, null]) {
      await expect(as(actor, `insert into tidings.retention_acts (run_id, kind, by, reason, cutoff, row_count, recorded_by) values ${row}`)).rejects.toThrow(/permission denied/);
    }
    await t.query(`insert into tidings.retention_acts (run_id, kind, by, reason, cutoff, row_count, recorded_by) values ${row}`);
    await expect(t.query("update tidings.retention_acts set reason = 'rewritten'")).rejects.toThrow(/append-only|refuse/i);
    await expect(t.query("delete from tidings.retention_acts")).rejects.toThrow(/append-only|refuse/i);
    await expect(t.query("truncate tidings.retention_acts")).rejects.toThrow(/append-only|refuse/i);
  });

  it("audit.retention and audit.erasures are the auditor's to read, and no bot's or client's", async () => {
    const auditor = await t.createLogin({ prefix: "auditor", grants: ["tidings_auditor"] });
    await expect(auditor.pool.query("select * from audit.retention")).resolves.toMatchObject({ rowCount: expect.any(Number) });
    await expect(auditor.pool.query("select * from audit.erasures")).resolves.toBeDefined();
    await expect(
      auditor.pool.query(
        "insert into tidings.retention_acts (run_id, kind, by, reason, cutoff, row_count, recorded_by) values (gen_random_uuid(), 'partition', 'a', 'b', now(), 0, 'x')",
      ),
    ).rejects.toThrow(/permission denied/);
    const client = await t.createLogin({ prefix: "client", grants: ["tidings_client"] });
    for (const view of ["audit.retention", "audit.erasures"]) {
      await expect(client.pool.query(`select * from ${view}`)).rejects.toThrow(/permission denied/);
      for (const actor of allBut("auditor")) await expect(as(actor, `select * from ${view}`)).rejects.toThrow(/permission denied/);
    }
  });
});
