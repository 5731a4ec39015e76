/**
 * Held replies, shared by the loopback SMTP server and the Slack stand-in: the
 * server takes a request in full and keeps its reply until the test says so.
 * A send held this way is in flight by construction, so a test can crash the
 * client mid-send without hoping that a latency is long enough.
 */

export interface Held<T> {
  /** What is held: an SMTP transaction, a Slack API call. */
  item: T;
  /** When the request arrived in full (Date.now()). */
  heldAt: number;
  /** When the client closed its connection while waiting for the reply (null while it waits). */
  clientGoneAt: number | null;
  state: "held" | "released" | "aborted";
}

export interface ReplyHold<T> {
  /** Every request this hold has held, in arrival order, whatever became of it. */
  readonly held: readonly Held<T>[];
  /** Resolve once `count` requests are held with their clients still waiting for the reply. */
  waitForHeld(count: number, timeoutMs?: number): Promise<Held<T>[]>;
  /**
   * Answer every held request as the server would have, and stop holding.
   * The server acts on it even if the client went away meanwhile (a message
   * is kept, a post is posted): a server that had done the work when its
   * reply was lost. Returns how many were released.
   */
  release(): number;
  /** Cut the connection of every held request unanswered, nothing done; stop holding. Returns how many. */
  abort(): number;
  /** Client connections open at the server now: 0 once every connection of a dead client has closed, so nothing more can arrive from it. */
  openConnections(): Promise<number>;
}

export interface HoldOptions {
  /** Requests answered as usual before holding starts. Default 0. */
  after?: number;
  /** Requests held, after those. Default: every one. */
  count?: number;
}

/** The server side of a hold: `take` decides, per request, whether to hold it. */
export class ReplyHolder<T> {
  private skip: number;
  private left: number;
  private readonly entries: Held<T>[] = [];
  private readonly pending = new Map<Held<T>, { answer: () => void; cut: () => void }>();
  private readonly waiters = new Set<() => void>();
  private closed = false;

  constructor(
    private readonly what: string,
    options: HoldOptions,
    private readonly connections: () => Promise<number>,
    /** A few words on the server's state, for a timeout message. */
    private readonly describe: () => string,
  ) {
    this.skip = options.after ?? 0;
    this.left = options.count ?? Number.POSITIVE_INFINITY;
  }

  /** Whether some replies are held right now (a second hold must wait until they are released or aborted). */
  get holding(): boolean {
    return this.pending.size > 0;
  }

  /**
   * Offer a request that would now be answered: null when it is to be
   * answered as usual, else the entry holding it (call `clientGone` when its
   * connection closes).
   */
  take(item: T, answer: () => void, cut: () => void): Held<T> | null {
    if (this.closed || this.left <= 0) return null;
    if (this.skip > 0) {
      this.skip -= 1;
      return null;
    }
    this.left -= 1;
    const entry: Held<T> = { item, heldAt: Date.now(), clientGoneAt: null, state: "held" };
    this.entries.push(entry);
    this.pending.set(entry, { answer, cut });
    this.wake();
    return entry;
  }

  clientGone(entry: Held<T>): void {
    if (entry.state === "held" && entry.clientGoneAt === null) entry.clientGoneAt = Date.now();
    this.wake();
  }

  /** The server is closing: cut what is held, stop holding, fail the waits. */
  close(): void {
    this.closed = true;
    this.finish("aborted");
  }

  private wake(): void {
    for (const wake of [...this.waiters]) wake();
  }

  private finish(how: "released" | "aborted"): number {
    const ended = [...this.pending];
    this.pending.clear();
    this.left = 0;
    for (const [entry, p] of ended) {
      entry.state = how;
      if (how === "released") p.answer();
      else p.cut();
    }
    this.wake();
    return ended.length;
  }

  private waiting(): Held<T>[] {
    return this.entries.filter((e) => e.state === "held" && e.clientGoneAt === null);
  }

  controller(): ReplyHold<T> {
    return {
      held: this.entries,
      waitForHeld: async (count, timeoutMs = 30_000) => {
        const deadline = Date.now() + timeoutMs;
        while (this.waiting().length < count) {
          if (this.closed) throw new Error(`${this.what}: the server closed while a test waited for held replies`);
          const left = deadline - Date.now();
          if (left <= 0) {
            throw new Error(
              `${this.what}: timed out after ${timeoutMs} ms waiting for ${count} held replies ` +
                `(holding ${this.waiting().length}, ${this.entries.length} held in all; ${this.describe()})`,
            );
          }
          await new Promise<void>((resolve) => {
            const wake = () => {
              clearTimeout(timer);
              this.waiters.delete(wake);
              resolve();
            };
            const timer = setTimeout(wake, left);
            this.waiters.add(wake);
          });
        }
        return this.waiting();
      },
      release: () => this.finish("released"),
      abort: () => this.finish("aborted"),
      openConnections: this.connections,
    };
  }
}
