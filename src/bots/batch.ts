import { databaseNow, inTransaction, type Tx } from "../db/database";
import { claimManyWithRecords, completeMany, queueHandling, transition } from "../streams/handling";
import type { StreamRecord } from "../streams/interfaces";
import type { BotRuntime, TransactionalBot } from "./bot";

export interface BatchItem {
  position: number;
  jobTag: string;
}

export interface BatchResult {
  /** Items the batch handled (completed or self-cancelled). */
  done: Set<BatchItem>;
}

/**
 * Collects the jobs of one transactional bot that arrive together and hands
 * them to `runBatch` in groups. A group starts on the next turn of the event
 * loop, so every job graphile-worker dispatched in the same tick (its local
 * queue hands out jobs in bursts) lands in one transaction. At most
 * `parallel` groups run at once; the rest wait and join the next group.
 */
export class BatchQueue {
  private waiting: Array<{ item: BatchItem; resolve: (handled: boolean) => void; reject: (e: unknown) => void }> = [];
  private running = 0;
  private scheduled = false;

  constructor(
    private readonly maxSize: number,
    private readonly parallel: number,
    private readonly runBatch: (items: BatchItem[]) => Promise<BatchResult>,
  ) {}

  /** Resolves true when the batch handled the item, false when the caller must handle it alone. */
  submit(item: BatchItem): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ item, resolve, reject });
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.running >= this.parallel || this.waiting.length === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      while (this.running < this.parallel && this.waiting.length > 0) {
        const group = this.waiting.splice(0, this.maxSize);
        this.running += 1;
        this.runBatch(group.map((g) => g.item))
          .then(
            (result) => group.forEach((g) => g.resolve(result.done.has(g.item))),
            // The whole batch failed (rolled back): every item is handled alone.
            () => group.forEach((g) => g.resolve(false)),
          )
          .finally(() => {
            this.running -= 1;
            this.schedule();
          });
      }
    });
  }
}

/**
 * One transaction for a group of records: claim them all, hand them to the
 * bot (records ordered by id, so per-id advisory locks are always taken in
 * the same order and two batches cannot deadlock), complete them all.
 * Records the batch could not claim (held by a job that died, already done)
 * are left to the caller, which handles them one by one with the full rules.
 */
export async function runTransactionalBatch<TDeps>(
  bot: TransactionalBot<TDeps>,
  rt: BotRuntime<TDeps>,
  items: BatchItem[],
): Promise<BatchResult> {
  const target = { stream: bot.stream, concern: bot.concern };
  const done = new Set<BatchItem>();
  // Two jobs for one record in the same batch: the first one handles it.
  const byPosition = new Map<number, BatchItem>();
  for (const item of items) if (!byPosition.has(item.position)) byPosition.set(item.position, item);

  await inTransaction(rt.db, bot.actor, async (tx: Tx) => {
    const claimed = await claimManyWithRecords(tx, target, [...byPosition.values()].map((i) => ({ position: i.position, claimedBy: i.jobTag })), bot.actor);
    if (claimed.length === 0) return;
    const attempts = new Map(claimed.map((c) => [c.state.position, c.state.attempts]));
    const records = claimed
      .map(({ record }): StreamRecord => {
        const schema = bot.schemas?.[record.type];
        if (bot.schemas && !schema) throw new Error(`${bot.concern} does not handle records of type ${record.type}`);
        return schema ? { ...record, payload: schema.parse(record.payload) } : record;
      })
      .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : a.position - b.position));

    // With coalesceById, the newest record of each id stands for the others.
    const toHandle = bot.batch?.coalesceById
      ? records.filter((r, i) => i === records.length - 1 || records[i + 1]!.id !== r.id)
      : records;
    const completed = new Set(records.map((r) => r.position));
    const now = rt.clock?.() ?? (await databaseNow(tx));
    if (bot.handleBatch) {
      await bot.handleBatch({ tx, records: toHandle, deps: rt.deps, logger: rt.logger.child({ stream: bot.stream, concern: bot.concern }), now });
    } else {
      for (const record of toHandle) {
        const outcome = await bot.handle({
          tx,
          record,
          attempt: attempts.get(record.position) ?? 1,
          deps: rt.deps,
          logger: rt.logger.child({ stream: bot.stream, concern: bot.concern, position: record.position }),
          now,
        });
        if (outcome) {
          completed.delete(record.position);
          const t = { ...target, position: record.position };
          await transition(tx, t, "self_cancel", { actor: bot.actor, reason: outcome.reason });
          await queueHandling(tx, bot.stream, bot.concern, [record.position], outcome.retryAfterMs);
        }
      }
    }
    await completeMany(tx, target, [...completed], bot.actor);
    for (const record of records) done.add(byPosition.get(record.position)!);
  });
  // A duplicate job for a record the batch handled has nothing left to do.
  for (const item of items) if (!done.has(item) && done.has(byPosition.get(item.position)!)) done.add(item);
  return { done };
}
