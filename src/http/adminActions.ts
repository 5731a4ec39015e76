import type { ApiPrincipal } from "../auth/apiKeys";
import { sql } from "kysely";
import { inTransaction, type Db } from "../db/database";
import { readTrail } from "../streams/trail";
import { NotFoundError } from "../errors/errors";
import { channelOfStream } from "../notification/channels";
import { latestViewsJson } from "../notification/projection";
import { ActionBody, ActionVerbParams, FailuresQuery, ResendBody } from "./consoleSchemas";
import { route, type RouteContext, type RouteDef } from "./routes";

/**
 * The operator tools these endpoints call: `findStuck`, `runAction` and
 * `resendNotification` of src/admin/redrive.ts, the library `npm run redrive`
 * calls. src/admin sits beside src/http (test/unit/layers.unit.test.ts), so
 * the composition root hands them in (src/composition.ts `operatorTools`,
 * given to createApp); these types are what the API needs of them, and the
 * compiler checks the library against them there.
 */
export interface OperatorRecord {
  stream: string;
  position: number;
  id: string;
  type: string;
  concern: string;
  status: string;
  attempts: number;
  lastError: string | null;
  lastActor: string | null;
  updatedAt: Date | null;
  recordedAt: Date;
}

export interface OperatorReport {
  actor: string;
  changes: Array<OperatorRecord & { to: string; requeue: boolean; outcome: string; error: string | null; details: Record<string, unknown> | null }>;
}

type Verb = (typeof ActionVerbParams)["shape"]["verb"]["options"][number];

export interface OperatorTools {
  findStuck(db: Db, input: { olderThan?: string }): Promise<{ failed: { records: OperatorRecord[]; matched: number }; running: { records: OperatorRecord[]; matched: number } }>;
  runAction(
    db: Db,
    verb: Verb,
    selection: { notification?: string; stream?: string; concern?: string; errorContains?: string },
    options: { execute?: boolean; reason?: string; requeue?: boolean; actor: string },
  ): Promise<OperatorReport>;
  resendNotification(db: Db, input: { notificationId: string; channels?: readonly string[]; execute?: boolean; reason?: string; actor: string }): Promise<unknown>;
}

/**
 * What waits for an operator, and the operator's repairs, over HTTP: the
 * console's Failures page and anyone else with an admin key. Every action
 * calls the library `npm run redrive` calls (src/admin/redrive.ts), so a
 * repair made here has the same lineage, history and refusals as one made
 * from the command line; only the actor differs: the API key's name.
 * Like the command, every action is a dry run unless `execute` is true, and
 * executing needs a reason.
 */

/** Who acted, as the handling history shows it: the API key, by name. */
export function actorOf(principal: ApiPrincipal): string {
  return `api-key:${principal.name}`;
}

/** What an operator needs to recognise a failed record: whose it is, where it went, what it was. */
export interface RecordContext {
  entity: { id: string; name: string | null } | null;
  destination: string | null;
  subject: string | null;
}

const NO_CONTEXT: RecordContext = { entity: null, destination: null, subject: null };

/**
 * Each record's context, keyed by stream and position: for a channel
 * operation, its destination and subject (from its payload); for a
 * notification's record, the entity (from the notification's view).
 */
async function recordContexts(db: Db, records: readonly OperatorRecord[]): Promise<Map<string, RecordContext>> {
  const contexts = new Map<string, RecordContext>();
  if (records.length === 0) return contexts;
  const ids = [...new Set(records.map((r) => r.id))];
  const streams = [...new Set(records.map((r) => r.stream))];
  const [trail, views] = await inTransaction(db, "reader", async (tx) => {
    await sql`set transaction read only`.execute(tx);
    return Promise.all([readTrail(tx, ids, { streams, handlingOf: [] }), latestViewsJson(tx, ids)]);
  });
  const entities = new Map<string, RecordContext["entity"]>();
  for (const [id, json] of views) {
    const entity = (JSON.parse(json) as { entity?: { id?: unknown; name?: unknown } }).entity;
    if (typeof entity?.id === "string") entities.set(id, { id: entity.id, name: typeof entity.name === "string" ? entity.name : null });
  }
  for (const record of trail) {
    const channel = channelOfStream(record.stream);
    const payload = record.payload as { subject?: unknown } | null;
    let destination: string | null = null;
    try {
      destination = channel ? channel.destinationOf(record.payload) : null;
    } catch {
      destination = null;
    }
    contexts.set(`${record.stream}#${record.position}`, {
      entity: entities.get(record.id) ?? null,
      destination,
      subject: typeof payload?.subject === "string" ? payload.subject : null,
    });
  }
  return contexts;
}

function recordJson(r: OperatorRecord, contexts?: Map<string, RecordContext>) {
  return {
    ...(contexts ? (contexts.get(`${r.stream}#${r.position}`) ?? NO_CONTEXT) : {}),
    stream: r.stream,
    position: r.position,
    id: r.id,
    type: r.type,
    concern: r.concern,
    status: r.status,
    attempts: r.attempts,
    lastError: r.lastError,
    lastActor: r.lastActor,
    since: r.updatedAt?.toISOString() ?? null,
    recordedAt: r.recordedAt.toISOString(),
  };
}

/** Failed records grouped by channel (stream and concern) and error, largest group first. */
export function groupFailures(records: readonly OperatorRecord[], contexts?: Map<string, RecordContext>) {
  const groups = new Map<string, { channel: string | null; stream: string; concern: string; error: string; records: OperatorRecord[] }>();
  for (const r of records) {
    const error = r.lastError ?? "(no error recorded)";
    const key = JSON.stringify([r.stream, r.concern, error]);
    const group = groups.get(key) ?? { channel: channelOfStream(r.stream)?.name ?? null, stream: r.stream, concern: r.concern, error, records: [] };
    group.records.push(r);
    groups.set(key, group);
  }
  return [...groups.values()]
    .sort((a, b) => b.records.length - a.records.length || a.stream.localeCompare(b.stream) || a.error.localeCompare(b.error))
    .map((g) => ({ ...g, count: g.records.length, records: g.records.map((r) => recordJson(r, contexts)) }));
}

type FailureClass = "transient" | "permanent";

/**
 * How each record's last failure was classified when it failed for good
 * (the runner's `fail` entry in its handling history: `details.transient`),
 * keyed by stream, position and concern. Re-driving a permanent failure (a
 * 5.1.1 bounce: no such mailbox) sends the same operation to the same
 * address again, so it will most likely fail again: the console warns
 * before the operator executes it.
 */
async function failureClasses(db: Db, changes: ReadonlyArray<{ id: string; stream: string }>): Promise<Map<string, FailureClass>> {
  const classes = new Map<string, FailureClass>();
  if (changes.length === 0) return classes;
  const streams = [...new Set(changes.map((c) => c.stream))];
  const trail = await inTransaction(db, "reader", (tx) => readTrail(tx, [...new Set(changes.map((c) => c.id))], { streams, handlingOf: streams, history: true }));
  for (const record of trail) {
    for (const handling of record.handling) {
      const failed = handling.history.filter((e) => e.action === "fail").at(-1);
      const transient = (failed?.details as { transient?: unknown } | null | undefined)?.transient;
      if (typeof transient === "boolean") classes.set(`${record.stream}#${record.position}#${handling.concern}`, transient ? "transient" : "permanent");
    }
  }
  return classes;
}

/** How many days back the failures page counts archived failures: "nothing waits" should not hide what operators just put away. */
export const ARCHIVED_DAYS = 7;

/**
 * Failures an operator archived lately (audit.redrives, the operators'
 * changes of handling, read as the auditor), and apart from them those
 * closed by a resend (archived as the resend replaced them): with nothing
 * failed, the console says nothing waits rather than that nothing failed,
 * and does not call a resend an archive.
 */
async function recentlyArchived(db: Db) {
  const { rows } = await inTransaction(db, "auditor", async (tx) => {
    await sql`set transaction read only`.execute(tx);
    // A resend archives the failed operation it replaces (details.verb = 'resend'): that failure was resent, not archived.
    return sql<{ n: number; last_at: Date | null; resent: number; resent_last_at: Date | null }>`
      select count(*) filter (where not resent)::int as n, max(at) filter (where not resent) as last_at,
             count(*) filter (where resent)::int as resent, max(at) filter (where resent) as resent_last_at
      from (select at, coalesce(details->>'verb' = 'resend', false) as resent from audit.redrives
            where to_status = 'ArchivedAfterFailure' and at > now() - make_interval(days => ${ARCHIVED_DAYS})) r`.execute(tx);
  });
  const row = rows[0];
  return {
    days: ARCHIVED_DAYS,
    count: row?.n ?? 0,
    lastAt: row?.last_at?.toISOString() ?? null,
    resent: { count: row?.resent ?? 0, lastAt: row?.resent_last_at?.toISOString() ?? null },
  };
}

function reportJson(report: OperatorReport, classes: Map<string, FailureClass> = new Map()) {
  return {
    ...report,
    changes: report.changes.map((c) => ({
      stream: c.stream,
      position: c.position,
      id: c.id,
      type: c.type,
      concern: c.concern,
      status: c.status,
      attempts: c.attempts,
      lastError: c.lastError,
      lastActor: c.lastActor,
      to: c.to,
      requeue: c.requeue,
      outcome: c.outcome,
      error: c.error,
      details: c.details,
      failure: classes.get(`${c.stream}#${c.position}#${c.concern}`) ?? null,
    })),
  };
}

/** The parts of a resend's report (src/admin/redrive.ts ResendReport) that the dry run's classification reads. */
interface ResendDryRun {
  notificationId: string;
  channels: Array<
    { destination: string | null; previous: { stream: string; position: number; concern: string; destination: string } & Record<string, unknown> } & Record<string, unknown>
  >;
}

/**
 * A resend's dry run, with each channel's `sameDestination` (the entity's
 * current detail is the one that failed) and its failed operation's
 * `previous.failure` class: resending a permanent failure (a 5.1.1 bounce)
 * to the same address will most likely fail the same way, and the console
 * warns before the operator executes it.
 */
async function classifyResend(db: Db, report: ResendDryRun) {
  const classes = await failureClasses(
    db,
    report.channels.map((c) => ({ id: report.notificationId, stream: c.previous.stream })),
  );
  return {
    ...report,
    channels: report.channels.map((c) => ({
      ...c,
      sameDestination: c.destination !== null && c.destination === c.previous.destination,
      previous: { ...c.previous, failure: classes.get(`${c.previous.stream}#${c.previous.position}#${c.previous.concern}`) ?? null },
    })),
  };
}

export function adminActionRoutes(ctx: RouteContext, tools: OperatorTools | undefined): RouteDef[] {
  const { db } = ctx;
  const operator = (): OperatorTools => {
    if (!tools) throw new NotFoundError("operator repairs are not available in this process: createApp was given no operatorTools (src/composition.ts)");
    return tools;
  };
  return [
    route(ctx, {
      method: "get",
      path: "/v1/admin/failures",
      scope: "reader",
      query: FailuresQuery,
      async handle({ query }, res) {
        const stuck = await operator().findStuck(db, { olderThan: query.stuckAfter });
        const contexts = await recordContexts(db, [...stuck.failed.records, ...stuck.running.records]);
        res.json({
          failed: groupFailures(stuck.failed.records, contexts),
          running: stuck.running.records.map((r) => recordJson(r, contexts)),
          matched: { failed: stuck.failed.matched, running: stuck.running.matched },
          archived: await recentlyArchived(db),
        });
      },
    }),
    route(ctx, {
      method: "post",
      path: "/v1/admin/actions/:verb",
      scope: "admin",
      params: ActionVerbParams,
      body: ActionBody,
      async handle({ params: { verb }, body, principal }, res) {
        const { execute, reason, requeue, ...selection } = body;
        const report = await operator().runAction(db, verb, selection, { execute, reason, requeue, actor: actorOf(principal) });
        // Only a re-drive's dry run is the moment to say a failure was permanent: the operator has not acted yet.
        const classes = verb === "redrive-failed" && !execute ? await failureClasses(db, report.changes) : undefined;
        res.json(reportJson(report, classes));
      },
    }),
    route(ctx, {
      method: "post",
      path: "/v1/admin/resend",
      scope: "admin",
      body: ResendBody,
      async handle({ body, principal }, res) {
        const report = await operator().resendNotification(db, {
          notificationId: body.notification,
          channels: body.channels,
          execute: body.execute,
          reason: body.reason,
          actor: actorOf(principal),
        });
        res.json(body.execute ? report : await classifyResend(db, report as ResendDryRun));
      },
    }),
  ];
}
