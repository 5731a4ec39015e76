import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { Logger as WorkerLogger, runMigrations as runWorkerMigrations } from "graphile-worker";
import type pg from "pg";
import { packageRoot } from "../util/packageRoot";

/**
 * Forward-only migrations: numbered SQL files in migrations/, each applied
 * once, in its own transaction, recorded in tidings.migrations with
 * the SHA-256 of its text. A database whose applied migrations are not the
 * files here (another name for a number, or another text) is refused with
 * what differs: tidings is unreleased and edits its migrations in place, so
 * such a database was made by an earlier pre-release and must be recreated.
 * A session-level advisory lock makes concurrent starts safe: the second
 * process waits, then finds nothing left to apply. graphile-worker's own
 * schema is installed first, under the same lock, because the outbox
 * trigger calls graphile_worker.add_jobs.
 */
export const MIGRATIONS_DIR = path.join(packageRoot(__dirname), "migrations");
const LOCK_KEY = "tidings:migrate";

export interface MigrationFile {
  id: number;
  name: string;
  file: string;
}

/**
 * The database is not set up the way tidings needs, in words an operator can
 * act on (printed as one line at start, no stack trace).
 */
export class DatabaseSetupError extends Error {}

export class MigrationMismatchError extends DatabaseSetupError {
  override name = "MigrationMismatchError";
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text).digest();
}

interface AppliedMigration {
  id: number;
  name: string;
  sha256: Buffer | null;
}

/** Applied migrations that are not the files here, in words an operator can act on. */
function mismatches(applied: AppliedMigration[], files: Map<number, { name: string; sha256: Buffer }>): string[] {
  const problems: string[] = [];
  for (const a of applied) {
    const f = files.get(a.id);
    const label = `${String(a.id).padStart(4, "0")}_${a.name}`;
    if (!f || f.name !== a.name) problems.push(`${label} was applied but is not in migrations/`);
    else if (!a.sha256 || !a.sha256.equals(f.sha256)) problems.push(`${label}.sql was applied with another text`);
  }
  return problems;
}

export async function listMigrations(dir = MIGRATIONS_DIR): Promise<MigrationFile[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  return files.map((file) => {
    const match = /^(\d{4})_([a-z0-9_]+)\.sql$/.exec(file);
    if (!match) throw new Error(`migration file "${file}" must be named NNNN_name.sql`);
    return { id: Number(match[1]), name: match[2]!, file: path.join(dir, file) };
  });
}

const quietWorkerLogger = new WorkerLogger(() => () => {});

export interface MigrateOptions {
  /** Apply migrations up to this number only (a test converting a database made by an earlier migration). */
  upTo?: number;
}

export async function migrate(pool: pg.Pool, log: (msg: string) => void = () => {}, options: MigrateOptions = {}): Promise<string[]> {
  const migrations = (await listMigrations()).filter((m) => options.upTo === undefined || m.id <= options.upTo);
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query("select pg_advisory_lock(hashtextextended($1, 0))", [LOCK_KEY]);
    await runWorkerMigrations({ pgPool: pool, logger: quietWorkerLogger });
    if ((await client.query<{ old: boolean }>("select to_regclass('public.tidings_migrations') is not null as old")).rows[0]?.old) {
      throw new MigrationMismatchError(
        "this database was migrated by a pre-release of tidings (public.tidings_migrations); it is not upgraded: " +
          "recreate the database (for the embedded default, stop tidings and delete DATA_DIR/pg)",
      );
    }
    await client.query(`
      create schema if not exists tidings;
      create table if not exists tidings.migrations (
        id integer primary key,
        name text not null,
        sha256 bytea not null,
        applied_at timestamptz not null default now()
      )`);
    const texts = new Map<number, string>();
    for (const m of migrations) texts.set(m.id, await readFile(m.file, "utf8"));
    const files = new Map(migrations.map((m) => [m.id, { name: m.name, sha256: sha256(texts.get(m.id)!) }]));
    const before = (await client.query<AppliedMigration>("select id, name, sha256 from tidings.migrations order by id")).rows;
    const problems = mismatches(before, files);
    if (problems.length > 0) {
      throw new MigrationMismatchError(
        `this database was migrated by another version of tidings (${problems.join("; ")}); ` +
          "pre-release schemas are not upgraded: recreate the database (for the embedded default, stop tidings and delete DATA_DIR/pg)",
      );
    }
    const done = new Set(before.map((r) => r.id));
    for (const m of migrations) {
      if (done.has(m.id)) continue;
      const text = texts.get(m.id)!;
      await client.query("begin");
      try {
        await client.query(text);
        await client.query("insert into tidings.migrations (id, name, sha256) values ($1, $2, $3)", [m.id, m.name, files.get(m.id)!.sha256]);
        await client.query("commit");
      } catch (error) {
        await client.query("rollback");
        throw new Error(`migration ${path.basename(m.file)} failed: ${(error as Error).message}`, { cause: error });
      }
      applied.push(path.basename(m.file));
      log(`applied migration ${path.basename(m.file)}`);
    }
    await grantQueueToService(client);
  } finally {
    await client.query("select pg_advisory_unlock(hashtextextended($1, 0))", [LOCK_KEY]).catch(() => {});
    client.release();
  }
  return applied;
}

/**
 * graphile-worker's queue is the service's to work: its workers fetch,
 * complete and fail jobs as the service login. graphile-worker protects its
 * tables with row-level security and no policy (only their owner may use
 * them); the service gets a policy of its own on each, and the grants, so
 * it works the queue without owning it. Run after every migration, for the
 * tables a later graphile-worker release may add.
 */
async function grantQueueToService(client: pg.PoolClient): Promise<void> {
  await client.query(`
    do $$
    declare t record;
    begin
      if not exists (select 1 from pg_roles where rolname = 'tidings_service') then
        return;
      end if;
      grant usage on schema graphile_worker to tidings_service;
      grant select, insert, update, delete on all tables in schema graphile_worker to tidings_service;
      grant usage, select on all sequences in schema graphile_worker to tidings_service;
      grant execute on all functions in schema graphile_worker to tidings_service;
      for t in
        select c.oid::regclass as rel from pg_class c
        where c.relnamespace = 'graphile_worker'::regnamespace and c.relkind = 'r' and c.relrowsecurity
          and not exists (select 1 from pg_policy p where p.polrelid = c.oid and p.polname = 'tidings_service')
      loop
        execute format('create policy tidings_service on %s to tidings_service using (true) with check (true)', t.rel);
      end loop;
    end $$`);
}

/**
 * What keeps this database from being current (for start-up and /readyz):
 * migrations not applied yet, and applied ones that are not the files here.
 */
export async function pendingMigrations(pool: pg.Pool): Promise<string[]> {
  const migrations = await listMigrations();
  const exists = await pool.query<{ t: string | null }>("select to_regclass('tidings.migrations')::text as t");
  if (!exists.rows[0]?.t) return migrations.map((m) => path.basename(m.file));
  const applied = (await pool.query<AppliedMigration>("select id, name, sha256 from tidings.migrations order by id")).rows;
  const files = new Map<number, { name: string; sha256: Buffer }>();
  for (const m of migrations) files.set(m.id, { name: m.name, sha256: sha256(await readFile(m.file, "utf8")) });
  const done = new Set(applied.map((r) => r.id));
  return [...migrations.filter((m) => !done.has(m.id)).map((m) => path.basename(m.file)), ...mismatches(applied, files)];
}
