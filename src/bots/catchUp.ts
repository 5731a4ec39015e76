import { sql } from "kysely";
import { databaseNow, inSavepoint, inTransaction } from "../db/database";
import type { Logger } from "../logging/logger";
import type { StreamRecord } from "../streams/interfaces";
import { decodeCursor, encodeCursor, FEED_START, feedHorizon, nudgeHorizon, readAfter, type FeedCursor } from "../streams/read";
import type { BotRuntime, CatchUpBot } from "./bot";

export interface CatchUpSettings {
  /** Pause between looks when the last one found less than a full batch. */
  idleMs: number;
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
    const { rows: locked } = await sql<{ locked: boolean }>`
      select pg_try_advisory_xact_lock(hashtextextended(${`checkpoint ${bot.checkpoint}`}, 0)) as locked`.execute(tx);
    if (!locked[0]?.locked) return 0;
    const row = await tx.selectFrom("tidings.checkpoints").select("cursors").where("name", "=", bot.checkpoint).executeTakeFirst();
    if (!row) throw new Error(`checkpoint "${bot.checkpoint}" is not declared in tidings.checkpoints`);
    const cursors = row.cursors as Record<string, string>;
    const records: StreamRecord[] = [];
    const next: Record<string, string> = { ...cursors };
    // One horizon for the streams it follows, taken before any of them is read.
    const horizon = await feedHorizon(tx, bot.streams);
    for (const stream of bot.streams) {
      const after: FeedCursor = cursors[stream] ? decodeCursor(cursors[stream]) : FEED_START;
      const read = await readAfter(tx, stream, after, { limit: bot.batchSize, horizon });
      stalled ||= read.stalled;
      records.push(...read.records);
      next[stream] = encodeCursor(read.next);
    }
    if (records.length === 0) return 0;
    const logger = rt.logger.child({ checkpoint: bot.checkpoint });
    const now = rt.clock?.() ?? (await databaseNow(tx));
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

/** Run a catch-up bot until stopped: batch after batch while it is behind, a short pause otherwise. */
export function startCatchUp<TDeps>(bot: CatchUpBot<TDeps>, rt: BotRuntime<TDeps>, settings: CatchUpSettings, logger: Logger): RunningCatchUp {
  let stopped = false;
  let wake: (() => void) | null = null;
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  const loop = (async () => {
    while (!stopped) {
      try {
        const handled = await catchUpOnce(bot, rt);
        // Straight on only while behind (a full batch); otherwise let records
        // gather for a moment, so a trickle is not refreshed record by record.
        if (handled < bot.batchSize) await pause(settings.idleMs);
      } catch (error) {
        // A connection cut while the process stops (its embedded PostgreSQL stops on the same signal) is expected then.
        if (stopped) logger.info({ err: error, checkpoint: bot.checkpoint }, "catch-up batch cut short (while shutting down)");
        else logger.error({ err: error, checkpoint: bot.checkpoint }, "catch-up batch failed; retrying from the same checkpoint");
        await pause(settings.errorMs);
      }
    }
  })();
  return {
    async stop() {
      stopped = true;
      wake?.();
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
