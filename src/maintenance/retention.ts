import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { sql } from "kysely";
import type pg from "pg";
import { to as copyTo } from "pg-copy-streams";
import { inTransaction, type Db } from "../db/database";
import { ValidationError } from "../errors/errors";

/**
 * Retention (docs/retention.md): partitions of the partitioned streams that
 * ended before now − the retention period are copied to gzip'd CSV files
 * (COPY ... TO STDOUT, loadable with COPY ... FROM), then detached and
 * dropped by tidings.drop_archived_partition, which checks again, under
 * lock, that nothing in them is waited on and that the files hold every row,
 * and records the act (tidings.retention_acts). One transaction per
 * partition, acting as the operator. Expired idempotency keys go the same
 * way (deleted, counted, recorded). A dry run only says what would happen.
 */

const OPERATOR_ROLE = "tidings_operator";
/** A drop waits at most this long for the stream's lock (appends hold it briefly); then that partition is refused for now. */
const DEFAULT_LOCK_TIMEOUT_MS = 5_000;

/** "12 months", "90 days", "2 weeks", "1 year": a PostgreSQL interval, whole units only. */
export const RETENTION_PERIOD_PATTERN = /^([1-9][0-9]{0,4}) ?(day|week|month|year)s?$/;

export function parseRetentionPeriod(text: string): string {
  const match = RETENTION_PERIOD_PATTERN.exec(text.trim());
  if (!match) throw new ValidationError(`retention period: "${text}" is not a number of days, weeks, months or years (e.g. "12 months")`);
  return `${match[1]} ${match[2]}${match[1] === "1" ? "" : "s"}`;
}

/** A record that holds its partition back, as the database names it. */
export interface HeldRecord {
  stream: string;
  position: number;
  id: string;
  concern: string | null;
  why: string;
}

export interface PartitionCandidate {
  table: string;
  stream: string;
  holds: "records" | "handling_history";
  partition: string;
  rangeFrom: Date;
  rangeTo: Date;
  rows: number;
  /** Handling rows of the partition's records (a stream's partition only). */
  handlingRows: number | null;
  /** Records still waited on: how many, and the first 20. */
  held: number;
  heldRecords: HeldRecord[];
}

export interface ArchivedPartition {
  partition: string;
  rows: number;
  file: string;
  sha256: string;
  handlingRows: number | null;
  handlingFile: string | null;
  handlingSha256: string | null;
  /** tidings.retention_acts.entry of the act. */
  entry: number;
}

export interface RefusedPartition {
  partition: string;
  reason: string;
  heldRecords: HeldRecord[];
}

export interface RetentionReport {
  runId: string;
  dryRun: boolean;
  period: string;
  cutoff: Date;
  actor: string;
  reason: string | null;
  candidates: PartitionCandidate[];
  archived: ArchivedPartition[];
  refused: RefusedPartition[];
  /** Idempotency keys older than the cutoff whose notification has ended: expired (or would be). */
  idempotencyKeys: number;
  /** The run's folder under the archive directory (with manifest.json), when it archived anything. */
  directory: string | null;
}

export interface RetentionOptions {
  /** PostgreSQL interval, e.g. "12 months" (RETENTION_PERIOD). */
  period: string;
  /** Where the run's folder is made (RETENTION_ARCHIVE_DIR). */
  archiveDir: string;
  execute?: boolean;
  /** Why; required to execute. */
  reason?: string;
  /** Who; recorded with the act. */
  actor: string;
  lockTimeoutMs?: number;
}

interface CandidateRow {
  table_name: string;
  stream: string;
  holds: "records" | "handling_history";
  partition: string;
  range_from: Date;
  range_to: Date;
  row_count: number;
  handling_rows: number | null;
  held: number;
  held_records: HeldRecord[];
}

/** The partitions that ended before now − period, and the idempotency keys that would expire. */
export async function planRetention(db: Db, period: string): Promise<{ period: string; cutoff: Date; candidates: PartitionCandidate[]; idempotencyKeys: number }> {
  const interval = parseRetentionPeriod(period);
  return inTransaction(db, "operator", async (tx) => {
    const cutoff = (await sql<{ cutoff: Date }>`select now() - ${interval}::interval as cutoff`.execute(tx)).rows[0]!.cutoff;
    const { rows } = await sql<CandidateRow>`select * from tidings.retention_candidates(${cutoff})`.execute(tx);
    const keys = await sql<{ n: number }>`
      select api.expire_idempotency_keys(${randomUUID()}::uuid, ${cutoff}, 'plan', 'plan', true) as n`.execute(tx);
    return {
      period: interval,
      cutoff,
      candidates: rows.map((r) => ({
        table: r.table_name,
        stream: r.stream,
        holds: r.holds,
        partition: r.partition,
        rangeFrom: r.range_from,
        rangeTo: r.range_to,
        rows: r.row_count,
        handlingRows: r.handling_rows,
        held: r.held,
        heldRecords: r.held_records,
      })),
      idempotencyKeys: keys.rows[0]!.n,
    };
  });
}

/** Dry run by default; with execute, archive and drop every partition nothing holds, then expire idempotency keys. */
export async function runRetention(db: Db, pool: pg.Pool, options: RetentionOptions): Promise<RetentionReport> {
  const reason = options.reason?.trim() ?? "";
  if (options.execute && reason === "") throw new ValidationError("a reason is required to execute (--reason)");
  if (options.actor.trim() === "") throw new ValidationError("who acts is required (--actor)");
  const plan = await planRetention(db, options.period);
  const runId = randomUUID();
  const report: RetentionReport = {
    runId,
    dryRun: !options.execute,
    period: plan.period,
    cutoff: plan.cutoff,
    actor: options.actor,
    reason: reason || null,
    candidates: plan.candidates,
    archived: [],
    refused: plan.candidates.filter((c) => c.held > 0).map((c) => ({ partition: c.partition, reason: `${c.held} record(s) still waited on`, heldRecords: c.heldRecords })),
    idempotencyKeys: plan.idempotencyKeys,
    directory: null,
  };
  if (!options.execute) return report;

  const due = plan.candidates.filter((c) => c.held === 0);
  if (due.length > 0) {
    report.directory = path.resolve(options.archiveDir, `retention-${plan.cutoff.toISOString().slice(0, 10)}-${runId.slice(0, 8)}`);
    await mkdir(report.directory, { recursive: true });
  }
  for (const candidate of due) {
    try {
      report.archived.push(
        await archiveAndDrop(pool, candidate, { runId, cutoff: plan.cutoff, actor: options.actor, reason, directory: report.directory!, lockTimeoutMs: options.lockTimeoutMs }),
      );
    } catch (error) {
      // Refused by the database (held meanwhile, rows differ, lock not had): nothing dropped, the files go.
      report.refused.push({ partition: candidate.partition, reason: (error as Error).message, heldRecords: [] });
    }
  }
  report.idempotencyKeys = await inTransaction(db, "operator", async (tx) => {
    const { rows } = await sql<{ n: number }>`select api.expire_idempotency_keys(${runId}::uuid, ${plan.cutoff}, ${options.actor}, ${reason}) as n`.execute(tx);
    return rows[0]!.n;
  });
  if (report.directory) await writeManifest(pool, report);
  return report;
}

async function archiveAndDrop(
  pool: pg.Pool,
  candidate: PartitionCandidate,
  run: { runId: string; cutoff: Date; actor: string; reason: string; directory: string; lockTimeoutMs: number | undefined },
): Promise<ArchivedPartition> {
  const client = await pool.connect();
  const files: string[] = [];
  try {
    await client.query(`begin; set local role ${OPERATOR_ROLE}; set local lock_timeout = ${Math.trunc(run.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS)}`);
    try {
      const { rows } = await client.query<{ records_query: string; handling_query: string | null }>("select * from tidings.archive_queries($1)", [candidate.partition]);
      const queries = rows[0]!;
      const records = await copyToFile(client, queries.records_query, path.join(run.directory, `${candidate.partition}.csv.gz`));
      files.push(records.file);
      const handling = queries.handling_query ? await copyToFile(client, queries.handling_query, path.join(run.directory, `${candidate.partition}.handling.csv.gz`)) : null;
      if (handling) files.push(handling.file);
      const archive = {
        file: path.basename(records.file),
        rows: records.rows,
        sha256: records.sha256,
        ...(handling ? { handlingFile: path.basename(handling.file), handlingRows: handling.rows, handlingSha256: handling.sha256 } : {}),
      };
      const dropped = await client.query<{ entry: number }>("select tidings.drop_archived_partition($1, $2, $3, $4, $5, $6) as entry", [
        run.runId,
        candidate.partition,
        run.cutoff,
        run.actor,
        run.reason,
        JSON.stringify(archive),
      ]);
      await client.query("commit");
      return {
        partition: candidate.partition,
        rows: records.rows,
        file: records.file,
        sha256: records.sha256,
        handlingRows: handling?.rows ?? null,
        handlingFile: handling?.file ?? null,
        handlingSha256: handling?.sha256 ?? null,
        entry: Number(dropped.rows[0]!.entry),
      };
    } catch (error) {
      await client.query("rollback").catch(() => {});
      for (const file of files) await rm(file, { force: true });
      throw error;
    }
  } finally {
    client.release();
  }
}

/**
 * COPY (query) TO STDOUT as CSV with a header line, gzip'd into the file
 * (written beside it, then renamed, so a file that exists is complete).
 * The SHA-256 is the compressed file's (what `sha256sum` says).
 */
async function copyToFile(client: pg.PoolClient, query: string, file: string): Promise<{ file: string; rows: number; sha256: string }> {
  const partial = `${file}.partial`;
  const hash = createHash("sha256");
  const hashing = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  const source = client.query(copyTo(`copy (${query}) to stdout with (format csv, header true)`));
  await pipeline(source, createGzip(), hashing, createWriteStream(partial, { flags: "wx" }));
  await rename(partial, file);
  return { file, rows: source.rowCount, sha256: hash.digest("hex") };
}

/** What the run archived, how to check the files and what their columns are (manifest.json in the run's folder). */
async function writeManifest(pool: pg.Pool, report: RetentionReport): Promise<void> {
  // One candidate per archived partition; a table shared by several is looked up once (columns[table]).
  const tables = report.archived.map((a) => report.candidates.find((c) => c.partition === a.partition)!);
  const columns: Record<string, Array<{ name: string; type: string }>> = {};
  for (const c of tables) {
    for (const table of c.holds === "records" ? [c.table, `${c.stream}__handling`] : [c.table]) {
      if (columns[table]) continue;
      const { rows } = await pool.query<{ name: string; type: string }>(
        `select a.attname as name, format_type(a.atttypid, a.atttypmod) as type from pg_attribute a
         join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = split_part($1, '.', 1) and c.relname = split_part($1, '.', 2) and a.attnum > 0 and not a.attisdropped
         order by a.attnum`,
        [table],
      );
      columns[table] = rows;
    }
  }
  const manifest = {
    runId: report.runId,
    cutoff: report.cutoff,
    period: report.period,
    actor: report.actor,
    reason: report.reason,
    format: "CSV with a header line, gzip'd (COPY ... TO STDOUT WITH (FORMAT csv, HEADER true)); load with COPY ... FROM ... WITH (FORMAT csv, HEADER true)",
    files: report.archived.flatMap((a) => {
      const c = report.candidates.find((x) => x.partition === a.partition)!;
      return [
        { file: path.basename(a.file), table: c.table, partition: a.partition, rangeFrom: c.rangeFrom, rangeTo: c.rangeTo, rows: a.rows, sha256: a.sha256 },
        ...(a.handlingFile
          ? [{ file: path.basename(a.handlingFile), table: `${c.stream}__handling`, partition: a.partition, rows: a.handlingRows, sha256: a.handlingSha256 }]
          : []),
      ];
    }),
    columns,
  };
  await writeFile(path.join(report.directory!, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
}
