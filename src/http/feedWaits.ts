import type { Counter, Gauge } from "prom-client";
import type { StreamRecord } from "../streams/interfaces";
import type { FeedCursor } from "../streams/read";
import { TooManyWaitsError } from "./problem";

export type FeedPage = { records: StreamRecord[]; next: FeedCursor };

/** How many long-polls may wait at once: per API key, and in the whole process. */
export interface FeedWaitLimits {
  perKey: number;
  total: number;
}

export const DEFAULT_FEED_WAIT_LIMITS: FeedWaitLimits = { perKey: 10, total: 1000 };

interface Waiter {
  after: FeedCursor;
  limit: number;
  finish(page: FeedPage): void;
  fail(error: unknown): void;
}

/** A place among the waiting requests, taken before the request's first read and given back when it answers. */
export interface WaitSlot {
  /**
   * Wait, until the slot's deadline, for records after `after`: the first
   * page that has some, or an empty one (the same cursor) at the deadline,
   * at stop(), or when `onGone`'s callback is called (the client left).
   */
  wait(after: FeedCursor, limit: number, onGone: (stop: () => void) => void): Promise<FeedPage>;
  release(): void;
}

/**
 * The long-polls of GET /v1/events in one process. Each request reads once
 * on its own; if that finds nothing it waits here, and one poller reads the
 * feed for all of them: every `pollMs`, while anyone waits, one read after
 * the oldest waiting cursor, as long as the longest limit asked, which each
 * waiter filters to the records after its own cursor. A waiter that finds
 * some answers at once. One read per tick, whatever the number of waiters.
 *
 * Why a poller and not LISTEN/NOTIFY: the feed serves only records below a
 * gap-safe horizon (readAfter: transactions older than every one still
 * running), so a notification at commit cannot say that a record is
 * readable yet, and the poller would be needed anyway; LISTEN would also
 * hold a connection per process and a trigger on the stream. The tick's
 * cost is one indexed read per `pollMs` per process, with waiters or
 * without a thousand of them.
 *
 * Waits are capped (a 429 past the cap, TooManyWaitsError) per API key and
 * in total; `stop()` answers every wait at once with an empty page.
 */
export class FeedWaits {
  private readonly waiters = new Set<Waiter>();
  /** Deadlines of the slots taken, per key: the cap counts slots, Retry-After says when the first ends. */
  private readonly slots = new Map<string, Set<{ deadline: number }>>();
  private slotCount = 0;
  private timer: NodeJS.Timeout | null = null;
  private polling = false;
  private stopped = false;

  constructor(
    private readonly options: {
      read(after: FeedCursor, limit: number): Promise<FeedPage>;
      /** The cursor right after a record, and the feed's order of cursors (src/http/feed.ts). */
      cursorOf(record: StreamRecord): FeedCursor;
      compare(a: FeedCursor, b: FeedCursor): number;
      pollMs: number;
      limits: FeedWaitLimits;
      waiting?: Gauge;
      polls?: Counter;
    },
  ) {}

  /** Whether the process is stopping: requests then answer without waiting. */
  get stopping(): boolean {
    return this.stopped;
  }

  /** Take a place among the waiters for `keyId` until `deadline`, or throw TooManyWaitsError. */
  reserve(keyId: string, deadline: number): WaitSlot {
    const { perKey, total } = this.options.limits;
    const mine = this.slots.get(keyId) ?? new Set();
    if (mine.size >= perKey) throw new TooManyWaitsError("key", perKey, this.secondsUntilFirstEnds(mine));
    if (this.slotCount >= total) throw new TooManyWaitsError("process", total, this.secondsUntilFirstEnds([...this.slots.values()].flatMap((s) => [...s])));
    const slot = { deadline };
    mine.add(slot);
    this.slots.set(keyId, mine);
    this.slotCount++;
    let released = false;
    return {
      wait: (after, limit, onGone) => this.wait(after, limit, deadline, onGone),
      release: () => {
        if (released) return;
        released = true;
        mine.delete(slot);
        if (mine.size === 0) this.slots.delete(keyId);
        this.slotCount--;
      },
    };
  }

  /** Answer every wait now (an empty page, the same cursor) and let no new one wait. */
  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    for (const w of [...this.waiters]) w.finish({ records: [], next: w.after });
  }

  /** Whole seconds until the first of these slots ends (at least 1). */
  private secondsUntilFirstEnds(slots: Iterable<{ deadline: number }>): number {
    let first = Infinity;
    for (const s of slots) first = Math.min(first, s.deadline);
    return Number.isFinite(first) ? Math.max(1, Math.ceil((first - Date.now()) / 1000)) : 1;
  }

  private wait(after: FeedCursor, limit: number, deadline: number, onGone: (stop: () => void) => void): Promise<FeedPage> {
    const empty: FeedPage = { records: [], next: after };
    if (this.stopped || deadline <= Date.now()) return Promise.resolve(empty);
    return new Promise<FeedPage>((resolve, reject) => {
      let ended = false;
      // Once only: the response's "close" (the client left) also fires after a normal answer.
      const end = () => {
        if (ended) return false;
        ended = true;
        clearTimeout(timeout);
        this.waiters.delete(waiter);
        this.options.waiting?.dec();
        return true;
      };
      const waiter: Waiter = {
        after,
        limit,
        finish: (page) => {
          if (end()) resolve(page);
        },
        fail: (error) => {
          if (end()) reject(error);
        },
      };
      const timeout = setTimeout(() => waiter.finish(empty), deadline - Date.now());
      this.waiters.add(waiter);
      this.options.waiting?.inc();
      onGone(() => waiter.finish(empty));
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.timer || this.polling || this.stopped || this.waiters.size === 0) return;
    this.timer = setTimeout(() => void this.tick(), this.options.pollMs);
  }

  private async tick(): Promise<void> {
    this.timer = null;
    const waiting = [...this.waiters];
    if (waiting.length === 0 || this.stopped) return;
    this.polling = true;
    try {
      const { compare, cursorOf } = this.options;
      const from = waiting.reduce((min, w) => (compare(w.after, min) < 0 ? w.after : min), waiting[0]!.after);
      const limit = Math.max(...waiting.map((w) => w.limit));
      this.options.polls?.inc();
      let page: FeedPage;
      try {
        page = await this.options.read(from, limit);
      } catch (error) {
        // The database is out of reach (or the read failed): every waiter answers with it (503 or 500), none hangs on.
        for (const w of waiting) if (this.waiters.has(w)) w.fail(error);
        return;
      }
      // The page is the records right after `from`, in feed order: each waiter's share is the part after its own cursor.
      for (const w of waiting) {
        if (!this.waiters.has(w)) continue;
        const records = page.records.filter((r) => compare(cursorOf(r), w.after) > 0).slice(0, w.limit);
        const last = records.at(-1);
        if (last) w.finish({ records, next: cursorOf(last) });
      }
    } finally {
      this.polling = false;
      this.schedule();
    }
  }
}
