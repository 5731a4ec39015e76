import { sql } from "kysely";
import { inSavepoint, inTransaction } from "../db/database";
import type { Logger } from "../logging/logger";
import type { StreamRecord } from "../streams/interfaces";
import { decodeCursor, encodeCursor, FEED_START, nudgeHorizon, readAfterEach } from "../streams/read";
import type { BotRuntime, CatchUpBot } from "./bot";

export interface CatchUpSettings {
  /** Pause between looks when the last one found less than a full batch. */
  idleMs: number;
  /**
   * The longest pause when look after look finds nothing: the pause doubles
   * from idleMs up to this (default 10 × idleMs), so an idle service costs
   * little. Work that this process's bots commit ends a long pause at once
   * (wakeCatchUps); only records written elsewhere (the API, SQL, another
   * worker host's bots) wait for the pause to end.
   */
  maxIdleMs?: number;
  /** Pause after a failed batch (it is retried from the same checkpoint). */
  errorMs: number;
}

export interface RunningCatchUp {
  stop(): Promise<void>;
}

/**
 * One batch: take the bot's lock (another process holding it is running the
 * same bot: nothing to do here), read what each stream committed after the
 * checkpoint, hand it to the bot, move the checkpoint. All in one
 * transaction, so a crash repeats the batch and never skips it. Returns how
 * many records were handled. A look that finds nothing writes nothing (no
 * commit to flush).
 */
export async function catchUpOnce<TDeps>(bot: CatchUpBot<TDeps>, rt: BotRuntime<TDeps>): Promise<number> {
  let stalled = false;
  const handled = await inTransaction(rt.db, bot.actor, async (tx) => {
    // The lock first, in a statement of its own: a statement reads with the
    // snapshot it started with, so a checkpoint read in the same statement
    // could predate the commit of the process that held the lock just before,
    // and its batch would be handled twice. Then, in one statement, the
    // checkpoint and one horizon for the streams it follows, before any of them is read.
    const { rows: locks } = await sql<{ locked: boolean; now: Date }>`
      select pg_try_advisory_xact_lock(hashtextextended(${`checkpoint ${bot.checkpoint}`}, 0)) as locked, now() as now`.execute(tx);
    if (!locks[0]?.locked) return 0;
    const { rows: looks } = await sql<{ cursors: Record<string, string> | null; horizon: string }>`
      select (select c.cursors from tidings.checkpoints c where c.name = ${bot.checkpoint}) as cursors,
             tidings.feed_horizon(${[...bot.streams]}::text[])::text as horizon`.execute(tx);
    const { cursors, horizon } = looks[0]!;
    if (!cursors) throw new Error(`checkpoint "${bot.checkpoint}" is not declared in tidings.checkpoints`);
    const next: Record<string, string> = { ...cursors };
    const reads = bot.streams.map((stream) => ({ stream, after: cursors[stream] ? decodeCursor(cursors[stream]) : FEED_START }));
    const read = await readAfterEach(tx, reads, { limit: bot.batchSize, horizon });
    stalled = read.stalled;
    const records = read.results.flatMap((r, i) => {
      next[reads[i]!.stream] = encodeCursor(r.next);
      return r.records;
    });
    if (records.length === 0) return 0;
    const logger = rt.logger.child({ checkpoint: bot.checkpoint });
    const now = rt.clock?.() ?? locks[0].now;
    const handle = (batch: StreamRecord[]) => inSavepoint(tx, "catch_up", () => bot.handleBatch({ tx, records: batch, deps: rt.deps, logger, now }));
    try {
      await handle(records);
    } catch (error) {
      // A database error is retried from the same checkpoint. Anything else is
      // this code failing on some record: handle the batch again one id at a
      // time, and pass over (recording it) only the id that fails.
      if (!isDataError(error)) throw error;
      for (const [id, ofId] of groupById(records)) {
        try {
          await handle(ofId);
        } catch (failure) {
          if (!isDataError(failure)) throw failure;
          logger.error({ err: failure, id }, "catch-up bot passed over records it could not handle");
          await tx
            .insertInto("tidings.checkpoint_failures")
            .values({
              checkpoint: bot.checkpoint,
              id,
              records: JSON.stringify(ofId.map((r) => ({ stream: r.stream, position: r.position }))),
              error: (failure as Error).message || String(failure),
            })
            .execute();
        }
      }
    }
    await tx
      .updateTable("tidings.checkpoints")
      .set({ cursors: JSON.stringify(next), updated_at: sql`now()` })
      .where("name", "=", bot.checkpoint)
      .execute();
    return records.length;
  });
  // Records wait at the horizon: move it for the next look.
  if (stalled) await nudgeHorizon(rt.db);
  return handled;
}

/** The catch-up loops of this process that pause between looks, each with what ends its pause early. */
const pausedLoops = new Set<() => void>();

/**
 * This process's bots committed work (records a catch-up bot may follow):
 * loops in a long idle pause look again, no sooner than idleMs after their
 * last look. Cheap: a call per committed batch.
 */
export function wakeCatchUps(): void {
  for (const wake of pausedLoops) wake();
}

/** Run a catch-up bot until stopped: batch after batch while it is behind, a short pause otherwise. */
export function startCatchUp<TDeps>(bot: CatchUpBot<TDeps>, rt: BotRuntime<TDeps>, settings: CatchUpSettings, logger: Logger): RunningCatchUp {
  let stopped = false;
  let stop: (() => void) | null = null;
  const maxIdleMs = settings.maxIdleMs ?? settings.idleMs * 10;
  const pause = (ms: number, wakeable = true) =>
    new Promise<void>((resolve) => {
      const started = Date.now();
      let timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        pausedLoops.delete(early);
        resolve();
      }
      // Woken: end the pause idleMs after it began (at once if that is past).
      function early() {
        clearTimeout(timer);
        timer = setTimeout(done, Math.max(0, started + settings.idleMs - Date.now()));
      }
      if (wakeable && ms > settings.idleMs) pausedLoops.add(early);
      stop = done;
    });
  const loop = (async () => {
    let emptyLooks = 0;
    while (!stopped) {
      try {
        const handled = await catchUpOnce(bot, rt);
        // Straight on only while behind (a full batch); otherwise let records
        // gather for a moment, so a trickle is not refreshed record by record,
        // and longer after each look that found nothing.
        emptyLooks = handled === 0 ? emptyLooks + 1 : 0;
        if (handled < bot.batchSize) await pause(Math.min(maxIdleMs, settings.idleMs * 2 ** Math.max(0, emptyLooks - 1)));
      } catch (error) {
        // A connection cut while the process stops (its embedded PostgreSQL stops on the same signal) is expected then.
        if (stopped) logger.info({ err: error, checkpoint: bot.checkpoint }, "catch-up batch cut short (while shutting down)");
        else logger.error({ err: error, checkpoint: bot.checkpoint }, "catch-up batch failed; retrying from the same checkpoint");
        await pause(settings.errorMs, false);
      }
    }
  })();
  return {
    async stop() {
      stopped = true;
      stop?.();
      await loop;
    },
  };
}

/** An error of the bot's own code on some record, not of the database (those carry a SQLSTATE). */
function isDataError(error: unknown): boolean {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    if (typeof (e as { code?: unknown }).code === "string") return false;
  }
  return error instanceof Error;
}

function groupById(records: StreamRecord[]): Map<string, StreamRecord[]> {
  const groups = new Map<string, StreamRecord[]>();
  for (const r of records) groups.set(r.id, [...(groups.get(r.id) ?? []), r]);
  return groups;
}
