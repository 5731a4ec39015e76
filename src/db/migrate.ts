import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { Logger as WorkerLogger, runMigrations as runWorkerMigrations } from "graphile-worker";
import type pg from "pg";

/**
 * Forward-only migrations: numbered SQL files in migrations/, each applied
 * once, in its own transaction, recorded in public.tidings_migrations with
 * the SHA-256 of its text. A database whose applied migrations are not the
 * files here (another name for a number, or another text) is refused with
 * what differs: tidings is unreleased and edits its migrations in place, so
 * such a database was made by an earlier pre-release and must be recreated.
 * A session-level advisory lock makes concurrent starts safe: the second
 * process waits, then finds nothing left to apply. graphile-worker's own
 * schema is installed first, under the same lock, because the outbox
 * trigger calls graphile_worker.add_jobs.
 */
export const MIGRATIONS_DIR = path.resolve(__dirname, "../../migrations");
const LOCK_KEY = "tidings:migrate";

export interface MigrationFile {
  id: number;
  name: string;
  file: string;
}

export class MigrationMismatchError extends Error {
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

export async function migrate(pool: pg.Pool, log: (msg: string) => void = () => {}): Promise<string[]> {
  const migrations = await listMigrations();
  const client = await pool.connect();
  const applied: string[] = [];
  try {
    await client.query("select pg_advisory_lock(hashtextextended($1, 0))", [LOCK_KEY]);
    await runWorkerMigrations({ pgPool: pool, logger: quietWorkerLogger });
    await client.query(`
      create table if not exists public.tidings_migrations (
        id integer primary key,
        name text not null,
        sha256 bytea,
        applied_at timestamptz not null default now()
      )`);
    await client.query("alter table public.tidings_migrations add column if not exists sha256 bytea");
    const texts = new Map<number, string>();
    for (const m of migrations) texts.set(m.id, await readFile(m.file, "utf8"));
    const files = new Map(migrations.map((m) => [m.id, { name: m.name, sha256: sha256(texts.get(m.id)!) }]));
    const before = (await client.query<AppliedMigration>("select id, name, sha256 from public.tidings_migrations order by id")).rows;
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
        await client.query("insert into public.tidings_migrations (id, name, sha256) values ($1, $2, $3)", [
          m.id,
          m.name,
          files.get(m.id)!.sha256,
        ]);
        await client.query("commit");
      } catch (error) {
        await client.query("rollback");
        throw new Error(`migration ${path.basename(m.file)} failed: ${(error as Error).message}`, { cause: error });
      }
      applied.push(path.basename(m.file));
      log(`applied migration ${path.basename(m.file)}`);
    }
  } finally {
    await client.query("select pg_advisory_unlock(hashtextextended($1, 0))", [LOCK_KEY]).catch(() => {});
    client.release();
  }
  return applied;
}

/** Migrations in migrations/ that the database has not applied yet (for /readyz). */
export async function pendingMigrations(pool: pg.Pool): Promise<string[]> {
  const migrations = await listMigrations();
  const exists = await pool.query<{ t: string | null }>("select to_regclass('public.tidings_migrations')::text as t");
  if (!exists.rows[0]?.t) return migrations.map((m) => path.basename(m.file));
  const done = new Set(
    (await pool.query<{ id: number }>("select id from public.tidings_migrations")).rows.map((r) => r.id),
  );
  return migrations.filter((m) => !done.has(m.id)).map((m) => path.basename(m.file));
}
