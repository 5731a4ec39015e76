import path from "node:path";
import express, { type RequestHandler } from "express";
import { sql } from "kysely";
import { inTransaction } from "../db/database";
import { packageRoot } from "../util/packageRoot";
import { TemplateVersionRecorded } from "../templates/template.schemas";
import { TemplateListQuery } from "./consoleSchemas";
import { route, type RouteContext, type RouteDef } from "./routes";

/**
 * The operator console (docs/console.md): static files (one HTML page, its
 * stylesheet and a few ES modules, src/console/public) served at /console,
 * and the endpoints only it needed that the API lacked: who the key is
 * (so the page shows what the key's scopes allow), the service's health and
 * the list of templates.
 * Everything else the console shows and does goes through the ordinary API
 * endpoints, with the key the operator signed in with.
 */

export const CONSOLE_DIR = path.join(packageRoot(__dirname), "src", "console", "public");

/**
 * The console's files, under a Content-Security-Policy that allows only its
 * own scripts and styles: the HTML of an email as sent is shown in a
 * sandboxed iframe (srcdoc, no scripts), and nothing else may run.
 */
export function consoleStatic(): RequestHandler[] {
  const security: RequestHandler = (_req, res, next) => {
    res.set({
      "Content-Security-Policy":
        "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
      "X-Content-Type-Options": "nosniff",
      "Referrer-Policy": "no-referrer",
      "Cache-Control": "no-cache",
    });
    next();
  };
  return [security, express.static(CONSOLE_DIR, { index: "index.html", redirect: true, fallthrough: true })];
}

export function consoleRoutes(ctx: RouteContext): RouteDef[] {
  const { db } = ctx;
  return [
    route(ctx, {
      method: "get",
      path: "/v1/me",
      scope: "reader",
      async handle({ principal }, res) {
        res.json({ name: principal.name, scopes: principal.scopes });
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/health",
      scope: "reader",
      async handle(_input, res) {
        res.json(await readHealth(ctx));
      },
    }),
    route(ctx, {
      method: "get",
      path: "/v1/templates",
      scope: "reader",
      query: TemplateListQuery,
      async handle({ query }, res) {
        const limit = query.limit ?? 100;
        // The newest version of each key (template.versions (id, position)), a page of keys after `after`.
        const { rows } = await inTransaction(db, "reader", (tx) =>
          sql<{ id: string; payload: unknown; recorded_at: Date }>`
            select id, payload, recorded_at from (
              select distinct on (id) id, payload, recorded_at from template.versions
              where id > ${query.after ?? ""} order by id, position desc
            ) t order by id limit ${limit + 1}`.execute(tx),
        );
        const items = rows.slice(0, limit).map((r) => {
          const v = TemplateVersionRecorded.parse(r.payload);
          return {
            key: v.key,
            version: v.version,
            description: v.template.description ?? null,
            locales: Object.keys(v.template.locales ?? {}).sort(),
            updatedAt: r.recorded_at.toISOString(),
            updatedBy: v.recordedBy,
          };
        });
        res.json({ items, next: rows.length > limit ? items.at(-1)!.key : null });
      },
    }),
  ];

  /**
   * What /metrics measures, as one JSON document, read the same way (as the
   * service, through the same database functions), plus the workers'
   * heartbeats, the failures waiting by hour and the streams' sizes.
   */
  async function readHealth(_ctx: RouteContext) {
    const workers = await sql<{ process_id: string; hostname: string; pid: number; pools: number; started_at: Date; heartbeat_at: Date; age: number }>`
      select process_id, hostname, pid, cardinality(worker_ids) as pools, started_at, heartbeat_at,
             extract(epoch from now() - heartbeat_at)::float8 as age
      from tidings.worker_heartbeats order by started_at`.execute(db);
    const queue = await sql<{ task: string; now: number; later: number; running: number }>`
      select task_identifier as task,
             count(*) filter (where locked_at is null and attempts < max_attempts and run_at <= now())::int as now,
             count(*) filter (where locked_at is null and attempts < max_attempts and run_at > now())::int as later,
             count(*) filter (where locked_at is not null)::int as running
      from graphile_worker.jobs group by task_identifier order by task_identifier`.execute(db);
    const lag = await sql<{ reader: string; stream: string; waiting: string; oldest_seconds: number }>`
      select reader, stream, waiting, oldest_seconds from tidings.read_lag() order by reader, stream`.execute(db);
    const failed = await sql<{ stream: string; concern: string; n: number }>`
      select stream, concern, failed::int as n from tidings.failed_handling_counts() order by stream, concern`.execute(db);
    // Estimates from the catalogue (as fresh as the last ANALYZE), so this stays one cheap query on streams of any size.
    // A partitioned stream holds nothing itself: its partitions (the leaves of its tree) are summed.
    const streams = await sql<{ stream: string; rows: number; bytes: string }>`
      select s.name as stream,
             coalesce((select case when bool_and(l.reltuples < 0) then -1 else sum(greatest(l.reltuples, 0)) end
                       from pg_partition_tree(c.oid) t join pg_class l on l.oid = t.relid where t.isleaf), -1)::float8 as rows,
             coalesce((select sum(pg_total_relation_size(t.relid)) from pg_partition_tree(c.oid) t where t.isleaf), 0)::text as bytes
      from tidings.streams s join pg_namespace n on n.nspname = split_part(s.name, '.', 1) join pg_class c on c.relnamespace = n.oid and c.relname = split_part(s.name, '.', 2) order by s.name`.execute(
      db,
    );
    // audit.failures_waiting has a partial index on each stream's failed handling rows: a small read.
    // As the auditor (who may read the audit views), read only.
    const perHour = await inTransaction(db, "auditor", async (tx) => {
      await sql`set transaction read only`.execute(tx);
      return sql<{ hour: Date; n: number }>`
        select date_trunc('hour', failed_since) as hour, count(*)::int as n from audit.failures_waiting
        where failed_since > now() - interval '24 hours' group by 1 order by 1`.execute(tx);
    });
    return {
      at: new Date().toISOString(),
      workers: workers.rows.map((w) => ({
        processId: w.process_id,
        hostname: w.hostname,
        pid: w.pid,
        pools: w.pools,
        startedAt: w.started_at.toISOString(),
        heartbeatAt: w.heartbeat_at.toISOString(),
        ageSeconds: Math.round(w.age * 10) / 10,
      })),
      queue: queue.rows,
      lag: lag.rows.map((r) => ({ reader: r.reader, stream: r.stream, waiting: Number(r.waiting), oldestSeconds: Number(r.oldest_seconds) })),
      failedWaiting: failed.rows.map((r) => ({ stream: r.stream, concern: r.concern, failed: r.n })),
      failuresPerHour: perHour.rows.map((r) => ({ hour: r.hour.toISOString(), failed: r.n })),
      // -1: never analysed, so no estimate yet.
      streams: streams.rows.map((r) => ({ stream: r.stream, estimatedRows: r.rows < 0 ? null : r.rows, bytes: Number(r.bytes) })),
    };
  }
}
