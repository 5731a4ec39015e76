import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { Logger as WorkerLogger, runMigrations as runWorkerMigrations } from "graphile-worker";
import type pg from "pg";

/**
 * Forward-only migrations: numbered SQL files in migrations/, each applied
 * once, in its own transaction, recorded in public.tidings_migrations.
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
        applied_at timestamptz not null default now()
      )`);
    const done = new Set(
      (await client.query<{ id: number }>("select id from public.tidings_migrations")).rows.map((r) => r.id),
    );
    for (const m of migrations) {
      if (done.has(m.id)) continue;
      const text = await readFile(m.file, "utf8");
      await client.query("begin");
      try {
        await client.query(text);
        await client.query("insert into public.tidings_migrations (id, name) values ($1, $2)", [m.id, m.name]);
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
