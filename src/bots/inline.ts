import { sql } from "kysely";
import { inTransaction, type Db } from "../db/database";
import type { Logger } from "../logging/logger";
import { queueHandling, transition } from "../streams/handling";
import { handlingTable } from "../streams/names";
import { taskIdentifier, type ExternalBot, type InlineSends } from "./bot";

/** The claimed_by of a record claimed inline by a worker process (runner.ts, claimInline). */
export const INLINE_CLAIM_PREFIX = "inline:";

/** A process's inline sends, reserved by the claiming transaction and held until recorded (BotRuntime.inline). */
export function createInlineSends(processId: string): InlineSends {
  // Per stream:concern, how many reservations hold each position (a record may be held twice: a second claim after a hand-over).
  const held = new Map<string, Map<number, number>>();
  let idle: Promise<void> = Promise.resolve();
  let wakeIdle: (() => void) | null = null;
  let open = 0;
  const key = (stream: string, concern: string) => `${stream}:${concern}`;
  return {
    processId,
    reserve(stream, concern, positions) {
      const counts = held.get(key(stream, concern)) ?? new Map<number, number>();
      held.set(key(stream, concern), counts);
      for (const p of positions) counts.set(p, (counts.get(p) ?? 0) + 1);
      if (open++ === 0) idle = new Promise<void>((resolve) => (wakeIdle = resolve));
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        for (const p of positions) {
          const n = (counts.get(p) ?? 1) - 1;
          if (n > 0) counts.set(p, n);
          else counts.delete(p);
        }
        if (--open === 0) wakeIdle?.();
      };
      return {
        release,
        until(sending) {
          void sending.then(release, release);
        },
      };
    },
    isSending(stream, concern, position) {
      return (held.get(key(stream, concern))?.get(position) ?? 0) > 0;
    },
    count(stream, concern) {
      return held.get(key(stream, concern))?.size ?? 0;
    },
    async settled() {
      await idle;
    },
  };
}

/**
 * Hand over records claimed inline whose sender will not record an outcome:
 * Running under `inline:<process>` for longer than the lease, where that
 * process has not heart-beaten for a lease (dead, or cut off), or is this
 * process and no longer sending it (its recording failed). Each attempt is
 * cancelled as abandoned, with the reason, and its job queued: the job's
 * claim finds the previous attempt abandoned (PreviousAttempt), as after a
 * worker that died holding a job. Records claimed by a live process are
 * never touched, however long their send takes.
 */
export async function recoverInlineClaims(db: Db, senders: readonly ExternalBot<unknown, unknown>[], inline: InlineSends, leaseMs: number, logger?: Logger): Promise<number> {
  if (senders.length === 0) return 0;
  const lease = sql`make_interval(secs => ${leaseMs / 1000})`;
  const { rows: live } = await sql<{ process_id: string }>`
    select process_id from tidings.worker_heartbeats where heartbeat_at > now() - ${lease}`.execute(db);
  const alive = new Set(live.map((r) => r.process_id));
  let recovered = 0;
  for (const bot of senders) {
    // One sender's failure (a refused change) must not keep the others' claims from being handed over.
    const positions = await inTransaction(db, bot.actor, async (tx) => {
      const { rows } = await sql<{ position: number; claimed_by: string; attempts: number }>`
        select position, claimed_by, attempts from ${handlingTable(bot.stream)}
        where concern = ${bot.concern} and status = 'Running' and updated_at < now() - ${lease}
          and claimed_by like ${`${INLINE_CLAIM_PREFIX}%`}
        order by position
        for update skip locked`.execute(tx);
      const handedOver: number[] = [];
      for (const row of rows) {
        const owner = row.claimed_by.slice(INLINE_CLAIM_PREFIX.length);
        const mine = owner === inline.processId;
        if (mine ? inline.isSending(bot.stream, bot.concern, row.position) : alive.has(owner)) continue;
        await transition(tx, { stream: bot.stream, concern: bot.concern, position: row.position }, "cancel", {
          actor: "runner",
          attempt: row.attempts,
          // Worded as the runner's own hand-over of an abandoned job (reclaimAbandoned), with who and why.
          reason: `attempt ${row.attempts} by ${row.claimed_by} was abandoned before recording an outcome (${mine ? "this process could not record it" : "that process stopped heart-beating"}); handling again`,
        });
        handedOver.push(row.position);
      }
      await queueHandling(tx, bot.stream, bot.concern, handedOver);
      return handedOver;
    }).catch((error: unknown) => {
      logger?.warn({ err: error, task: taskIdentifier(bot) }, "handing over inline claims failed; trying again at the next heartbeat");
      return [] as number[];
    });
    if (positions.length > 0) logger?.warn({ task: taskIdentifier(bot), positions }, "handed over records claimed inline by a process that will not record their outcome");
    recovered += positions.length;
  }
  return recovered;
}
