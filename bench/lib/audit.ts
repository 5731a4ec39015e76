import type pg from "pg";
import { percentile, timed } from "./stats";
import type { BenchDatabase } from "./database";

const CHUNK = 500_000;

/**
 * "Emails to one address" on N email records. The records are generated in
 * bulk (as the owner, with triggers off for the load only: no jobs queued),
 * each with its success event and handling row, ten emails per address; then
 * the audit view is asked, by the service login as the auditor role, for 50
 * random addresses.
 */
export async function auditQuery(bench: BenchDatabase, sizes: number[], log: (m: string) => void = () => {}) {
  if (!bench.superuser) {
    log("skipped: generating rows needs a superuser (session_replication_role)");
    return [];
  }
  const results: Array<{ rows: number; medianMs: number; p95Ms: number; matches: number; loadSeconds: number }> = [];
  const { rows: have } = await bench.adminPool.query("select count(*)::int as n from email.operations");
  let total = have[0].n as number;
  // One record a second, the last one now: the largest size reaches this far back.
  const span = Math.max(...sizes);
  await partitionsBack(bench, span);
  for (const size of sizes.sort((a, b) => a - b)) {
    const load = await timed(async () => {
      while (total < size) {
        const n = Math.min(CHUNK, size - total);
        await generate(bench, total, n, span);
        total += n;
        log(`  generated ${total.toLocaleString("en")} email records`);
      }
      await bench.adminPool.query("analyze email.operations; analyze email.events; analyze email.operations__handling");
    });
    const addresses = Math.max(1, Math.floor(size / 10));
    const samples: number[] = [];
    let matches = 0;
    // Asked as production asks it: the service login acting as the auditor.
    const client = await bench.pool.connect();
    try {
      await client.query("set role tidings_auditor");
      for (let i = 0; i < 60; i++) {
        const address = `user${Math.floor(Math.random() * addresses)}@example.com`;
        const { result, ms } = await timed(() =>
          client.query({ name: "audit-emails-to", text: "select * from audit.emails where recipient = $1 order by requested_at desc", values: [address] }),
        );
        if (i >= 10) samples.push(ms); // the first ten warm the cache and the prepared plan
        matches = result.rowCount ?? 0;
      }
      await client.query("reset role");
    } finally {
      client.release();
    }
    samples.sort((a, b) => a - b);
    results.push({ rows: size, medianMs: percentile(samples, 50), p95Ms: percentile(samples, 95), matches, loadSeconds: load.ms / 1000 });
  }
  return results;
}

/**
 * The email streams are partitioned by recorded_at, and tidings creates
 * partitions from the current interval on: the generated records are
 * backdated (one a second), so the bench creates the partitions of the
 * intervals they fall in, as an operator importing history would.
 */
async function partitionsBack(bench: BenchDatabase, seconds: number): Promise<void> {
  // As the owner, who owns every other partition (and drops archived ones).
  await inAdminTransaction(bench, "set local role tidings_owner", (client) =>
    client.query(
      `select tidings.create_partition(t.table_name, f.at,
              least(f.at + t.partition_interval,
                    coalesce((select min(s.range_from) from tidings.stream_partitions s where s.table_name = t.table_name and s.range_from > f.at), 'infinity')))
     from tidings.partitioned_tables t,
          lateral generate_series(tidings.partition_floor(t.partition_interval, now() - make_interval(secs => $1)), now(), t.partition_interval) f(at)
     where t.table_name in ('email.operations', 'email.events')
       and not exists (select 1 from tidings.stream_partitions s where s.table_name = t.table_name and s.range_from <= f.at and s.range_to > f.at)`,
      [seconds],
    ),
  );
}

/** One transaction on a superuser's connection, begun with `setting` (a `set local`). */
async function inAdminTransaction(bench: BenchDatabase, setting: string, fn: (client: pg.PoolClient) => Promise<unknown>): Promise<void> {
  const client = await bench.adminPool.connect();
  try {
    await client.query("begin");
    await client.query(setting);
    await fn(client);
    await client.query("commit");
  } catch (error) {
    await client.query("rollback").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}

async function generate(bench: BenchDatabase, offset: number, n: number, span: number): Promise<void> {
  // Bulk load only: skip the outbox and append-only triggers for this transaction.
  await inAdminTransaction(bench, "set local session_replication_role = replica", async (client) => {
    await client.query(
      `insert into email.operations (id, type, payload, recorded_at)
       select gen_random_uuid()::text, 'SendEmailOp',
              jsonb_build_object(
                'operationId', 'bench-' || g || ':email', 'notificationId', 'bench-' || g, 'purpose', 'notification',
                'entityId', 'e' || (g % $3), 'to', jsonb_build_array('user' || (g % $3) || '@example.com'),
                'subject', 'Benchmark ' || g, 'text', 'Hello.', 'messageId', '<bench-' || g || '.email@tidings>', 'tags', '{}'::jsonb),
              now() - make_interval(secs => $4 - g)
       from generate_series($1::bigint + 1, $1::bigint + $2) g`,
      [offset, n, Math.max(1, Math.floor((offset + n) / 10)), span],
    );
    await client.query(
      `insert into email.events (id, type, payload, caused_by_stream, caused_by_position, recorded_at)
       select o.id, 'SucceededInSendingEmailEvent',
              jsonb_build_object('operationId', o.payload->>'operationId', 'attempt', 1, 'messageId', o.payload->>'messageId',
                                 'accepted', o.payload->'to', 'rejected', '[]'::jsonb, 'response', '250 2.0.0 Ok'),
              'email.operations', o.position, o.recorded_at
       from email.operations o where o.position > (select coalesce(max(caused_by_position), 0) from email.events)`,
    );
    await client.query(
      `insert into email.operations__handling (position, concern, status, attempts, last_action, last_actor, updated_at)
       select o.position, 'email_bot', 'Completed', 1, 'complete', 'email_bot', o.recorded_at
       from email.operations o where not exists (select 1 from email.operations__handling h where h.position = o.position and h.concern = 'email_bot')
         and o.position > (select coalesce(max(position), 0) from email.operations__handling)`,
    );
  });
}
