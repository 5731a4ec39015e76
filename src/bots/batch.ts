import type { HandledOutcome } from "./bot";

/** One job of a batch: the record it points to and the job, named in handling history ("job 42"). */
export interface BatchItem {
  position: number;
  jobTag: string;
}

/**
 * Collects the jobs of one bot that arrive together and hands them to
 * `runBatch` in groups. A group starts on the next turn of the event loop,
 * so every job graphile-worker dispatched in the same tick (its local queue
 * hands out jobs in bursts) lands in one batch. At most `parallel` groups run
 * at once; the rest wait and join the next group.
 */
export class BatchQueue {
  private waiting: Array<{ item: BatchItem; resolve: (outcome: HandledOutcome) => void; reject: (e: unknown) => void }> = [];
  private running = 0;
  private scheduled = false;

  constructor(
    private readonly maxSize: number,
    private readonly parallel: number,
    private readonly runBatch: (items: BatchItem[]) => Promise<Map<BatchItem, HandledOutcome>>,
  ) {}

  /** Resolves with how the item's job ended; rejects when its batch failed in a way nothing could record. */
  submit(item: BatchItem): Promise<HandledOutcome> {
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
            (outcomes) => group.forEach((g) => g.resolve(outcomes.get(g.item) ?? "skipped")),
            (error: unknown) => group.forEach((g) => g.reject(error)),
          )
          .finally(() => {
            this.running -= 1;
            this.schedule();
          });
      }
    });
  }
}
