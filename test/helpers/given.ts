/**
 * Given/when/then for the rules of the bots and the projection, in Emmett's
 * manner, against a real PostgreSQL and the bots' real dependencies (the
 * loopback SMTP server, the Slack stand-in), with no workers and no waiting:
 *
 * - `given(rules, stream, records)`: records appended to a stream, as its
 *   producer would append them (the outbox queues their jobs, as always);
 * - `whenHandled(rules, bot, records)`: that bot handles those records as one
 *   batch, through the runner's own pipeline (`handleBatch`), called here;
 * - `whenSettled(rules)`: every record waiting for a bot is handled by it,
 *   and what that appends in turn, until nothing is due; then the projection
 *   catches up. The whole workflow, in this process, in a deterministic order;
 * - `whenProjectionCatchesUp(rules)`: the projection follows its streams to
 *   their end;
 * - then: read what was appended (`appended`), the handling state
 *   (`handlingOf`), the view (`viewOf`) and assert on them.
 *
 * Time is the rules' clock (`rules.clock`), which bots see as `now`: moving it
 * on makes jobs scheduled for later (a saga's deadline, a retry) due, with no
 * sleeping. Tests that need real workers, real time or processes dying stay
 * end to end (test/int/*.int.test.ts, test/fault).
 */
import { sql } from "kysely";
import type { AnyBot, Bot, BotRuntime, CatchUpBot, HandledOutcome } from "../../src/bots/bot";
import { taskIdentifier } from "../../src/bots/bot";
import type { BatchItem } from "../../src/bots/batch";
import { catchUpOnce } from "../../src/bots/catchUp";
import { allBots, type BotDeps } from "../../src/composition";
import { handleBatch } from "../../src/bots/runner";
import { inTransaction } from "../../src/db/database";
import { getHandling } from "../../src/streams/handling";
import type { HandlingState, NewRecord, StreamRecord } from "../../src/streams/interfaces";
import { append } from "../../src/streams/append";
import { handlingTable, streamTable } from "../../src/streams/names";
import { Streams } from "../../src/notification/streams";
import { findRecords, getLatestById } from "../../src/streams/read";
import { OUTCOME_TYPES, startTidings, type Tidings } from "./tidings";
import { testLogger } from "./worker";

/** The bots' clock: real time plus how far a test moved it on. */
export class RulesClock {
  private offsetMs = 0;
  now(): Date {
    return new Date(Date.now() + this.offsetMs);
  }
  /** Move on by ms (never back). */
  advance(ms: number): void {
    this.offsetMs += Math.max(0, ms);
  }
  /** Move on to `at`, if it is later than now. */
  advanceTo(at: Date): void {
    this.advance(at.getTime() - this.now().getTime());
  }
}

export interface Rules extends Tidings {
  clock: RulesClock;
  bots: readonly AnyBot<BotDeps>[];
  runtime: BotRuntime<BotDeps>;
}

/**
 * A test database with every bot's dependencies (as startTidings: loopback
 * SMTP, the Slack stand-in) and no worker. `options` are startTidings's.
 */
export async function startRules(options: Omit<Parameters<typeof startTidings>[0] & object, "autoStart"> = {}): Promise<Rules> {
  const app = await startTidings({ ...options, autoStart: false });
  const clock = new RulesClock();
  const runtime: BotRuntime<BotDeps> = {
    db: app.t.db,
    deps: app.deps,
    logger: testLogger,
    clock: () => clock.now(),
    settings: {
      maxAttempts: options.maxAttempts ?? 3,
      retryBaseMs: 50,
      retryMaxMs: 1_000,
      ...(options.retrySchedules ? { retrySchedules: { email_bot: options.retrySchedules.email, slack_bot: options.retrySchedules.slack } } : {}),
    },
  };
  return Object.assign(app, { clock, bots: allBots(), runtime });
}

/** Given: these records appended to `stream` by `as` (default: the stream's producer, as in tidings.stream_producers). */
export async function given(rules: Rules, stream: string, records: readonly NewRecord[], options: { as?: string } = {}): Promise<StreamRecord[]> {
  const actor = options.as ?? (await producerOf(rules, stream));
  const results = await inTransaction(rules.t.db, actor, (tx) => append(tx, stream, records));
  const positions = results.map((r) => r.position);
  const found = await findRecords(rules.t.adminDb, stream, { limit: null, ids: [...new Set(records.map((r) => r.id))] });
  return positions.map((p) => found.find((r) => r.position === p)!);
}

async function producerOf(rules: Rules, stream: string): Promise<string> {
  const { rows } = await rules.t.query<{ actor: string }>("select actor from tidings.stream_producers where stream = $1 order by actor limit 1", [stream]);
  if (!rows[0]) throw new Error(`stream ${stream} has no producer`);
  return rows[0].actor;
}

let jobSerial = 0;

/**
 * When: `bot` handles these records as one batch (a job each), through the
 * runner's pipeline. The jobs the outbox queued for them stay queued: no
 * worker runs them.
 * Returns how each job ended, in order.
 */
export async function whenHandled(rules: Rules, bot: Bot<BotDeps> | string, records: readonly Pick<StreamRecord, "position">[]): Promise<HandledOutcome[]> {
  const runner = typeof bot === "string" ? botFor(rules, bot) : bot;
  const items: BatchItem[] = records.map((r) => ({ position: r.position, jobTag: `test job ${++jobSerial}` }));
  const outcomes = await handleBatch(runner, rules.runtime, items);
  return items.map((i) => outcomes.get(i)!);
}

/** The job-driven bot of a task ("stream:concern"). */
export function botFor(rules: Rules, task: string): Bot<BotDeps> {
  const bot = rules.bots.find((b): b is Bot<BotDeps> => b.kind !== "catch-up" && taskIdentifier(b) === task);
  if (!bot) throw new Error(`no bot handles ${task}`);
  return bot;
}

interface Waiting {
  task: string;
  position: number;
  dueAt: Date;
}

/**
 * The records waiting for a bot, by the engine's own account: handling
 * Available* (or no row yet), the stream not disabled for the concern. When
 * each is due: a retry or self-cancel after its `retryInMs` (counted on this
 * clock, never earlier than the real delay), a consumer's run_at_field (a
 * saga's deadline) at that time, anything else at once. (graphile-worker's
 * jobs are not read: which record a job is for is in its payload, which its
 * public view leaves out; the engine's state says the same.)
 */
async function waitingRecords(rules: Rules): Promise<Waiting[]> {
  const { rows: consumers } = await rules.t.query<{ stream: string; concern: string; task_identifier: string; record_types: string[] | null; run_at_field: string | null }>(
    "select stream, concern, task_identifier, record_types, run_at_field from tidings.stream_consumers order by stream, concern",
  );
  const offsetMs = rules.clock.now().getTime() - Date.now();
  const handled = consumers.filter((c) => rules.bots.some((b) => b.kind !== "catch-up" && taskIdentifier(b) === c.task_identifier));
  // One statement for every consumer: settling asks this after every batch.
  const perConsumer = handled.map(
    (c) => sql`
      select ${c.task_identifier}::text as task, s.position,
             case when h.last_details ? 'retryInMs'
                    then h.updated_at + ((h.last_details->>'retryInMs')::numeric + ${offsetMs}) * interval '1 millisecond'
                  when ${c.run_at_field}::text is not null then (s.payload->>${c.run_at_field}::text)::timestamptz
                  else s.recorded_at end as due_at
      from ${streamTable(c.stream)} s
      left join ${handlingTable(c.stream)} h on h.position = s.position and h.concern = ${c.concern}
      where (${c.record_types}::text[] is null or s.type = any(${c.record_types}::text[]))
        and (h.status is null or h.status::text like 'Available%')
        and not exists (select 1 from tidings.stream_concern_states d where d.stream = ${c.stream} and d.concern = ${c.concern} and d.disabled)`,
  );
  if (perConsumer.length === 0) return [];
  const { rows } = await sql<{ task: string; position: number; due_at: Date }>`
    select * from (${sql.join(perConsumer, sql` union all `)}) w order by due_at, position`.execute(rules.t.adminDb);
  return rows.map((r) => ({ task: r.task, position: r.position, dueAt: r.due_at }));
}

export interface SettleOptions {
  /** Tasks ("stream:concern") whose records are left alone: e.g. a channel that never answers. */
  except?: readonly string[];
  /**
   * Also take the records due later (retries, deadlines), earliest first,
   * moving the clock on to each one's time: "and then time passed". Default
   * false: only what is due now.
   */
  later?: boolean;
  /** A bound on batches handled, against a rule that never settles. Default 200. */
  maxBatches?: number;
}

/**
 * When: every record due is handled by its bot (a bot that batches gets its
 * due records together, up to its batch size; any other, one at a time), and
 * whatever that appends in turn, until nothing is due; then the projection
 * catches up. Returns how many records were handled.
 */
export async function whenSettled(rules: Rules, options: SettleOptions = {}): Promise<number> {
  const except = new Set(options.except ?? []);
  let handled = 0;
  for (let batches = 0; ; batches++) {
    if (batches >= (options.maxBatches ?? 200)) throw new Error(`the workflow did not settle within ${batches} batches`);
    const waiting = (await waitingRecords(rules)).filter((w) => !except.has(w.task));
    let due = waiting.filter((w) => w.dueAt <= rules.clock.now());
    if (due.length === 0 && options.later && waiting[0]) {
      rules.clock.advanceTo(waiting[0].dueAt);
      due = [waiting[0]];
    }
    if (due.length === 0) {
      await whenProjectionCatchesUp(rules);
      return handled;
    }
    const bot = botFor(rules, due[0]!.task);
    const batch = bot.batch ? due.filter((w) => w.task === due[0]!.task).slice(0, bot.batch.maxSize) : [due[0]!];
    await handleBatch(
      bot,
      rules.runtime,
      batch.map((w) => ({ position: w.position, jobTag: `test job ${++jobSerial}` })),
    );
    handled += batch.length;
  }
}

/** When: the projection follows its streams to their end. Returns how many records it read. */
export async function whenProjectionCatchesUp(rules: Rules): Promise<number> {
  const projection = rules.bots.find((b): b is CatchUpBot<BotDeps> => b.kind === "catch-up")!;
  let read = 0;
  for (let n; (n = await catchUpOnce(projection, rules.runtime)) > 0;) read += n;
  return read;
}

/** Then: the types of the records of `id` in `stream`, in order. */
export async function appended(rules: Rules, stream: string, id: string): Promise<string[]> {
  return (await findRecords(rules.t.adminDb, stream, { ids: [id], limit: null })).map((r) => r.type);
}

/** Then: the handling state of a record for a concern. */
export async function handlingOf(rules: Rules, record: Pick<StreamRecord, "stream" | "position">, concern: string): Promise<HandlingState> {
  return getHandling(rules.t.adminDb, record.stream, record.position, concern);
}

/** Then: the notification's latest view (the projection's), or undefined. */
export async function viewOf(rules: Rules, id: string): Promise<Record<string, any> | undefined> {
  return (await getLatestById(rules.t.adminDb, Streams.notificationViews, id))?.payload as Record<string, any> | undefined;
}

/** Then: the notification's outcome event, or undefined. */
export async function outcomeOf(rules: Rules, id: string): Promise<StreamRecord | undefined> {
  return (await getLatestById(rules.t.adminDb, Streams.notificationEvents, id, { types: OUTCOME_TYPES })) ?? undefined;
}

/**
 * When the workflow settles (`whenSettled`), then `probe` holds: its value.
 * Fails naming `what` if it does not: there is nothing to wait for.
 */
export async function settledThen<T>(rules: Rules, probe: () => T | Promise<T>, what = "the condition", options: SettleOptions = {}): Promise<NonNullable<T>> {
  await whenSettled(rules, options);
  const value = await probe();
  if (!value) throw new Error(`after the workflow settled, ${what} does not hold`);
  return value;
}
