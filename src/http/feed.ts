import { inTransaction, type Db } from "../db/database";
import type { StreamRecord } from "../streams/interfaces";
import { Streams } from "../notification/streams";
import { FEED_START, cursorAfter, encodeCursor, nudgeHorizon, readAfter, type FeedCursor } from "../streams/read";
import { FeedWaits, type FeedPage } from "./feedWaits";
import { route, type RouteContext, type RouteDef } from "./routes";
import { FeedQuery } from "./schemas";

export const DEFAULT_FEED_POLL_MS = 250;

/** The cursor that resumes right after a record. */
function cursorOf(r: StreamRecord): FeedCursor {
  return cursorAfter(r);
}

/** The feed's order: (feed key, position). */
function compareCursors(a: FeedCursor, b: FeedCursor): number {
  const key = BigInt(a.key) - BigInt(b.key);
  if (key !== 0n) return key < 0n ? -1 : 1;
  return a.position - b.position;
}

export function toFeedEvent(r: StreamRecord) {
  return {
    cursor: encodeCursor(cursorOf(r)),
    position: r.position,
    id: r.id,
    type: r.type,
    payload: r.payload,
    tags: r.tags,
    causedBy: r.causedBy,
    recordedAt: r.recordedAt.toISOString(),
  };
}

/**
 * One read of the feed, as the reader actor. Events that wait exactly at the
 * horizon (a quiet server) are let through by moving it, and read again.
 */
export async function readFeed(db: Db, after: FeedCursor, limit: number): Promise<FeedPage> {
  const page = await inTransaction(db, "reader", (tx) => readAfter(tx, Streams.notificationEvents, after, { limit }));
  if (!page.stalled || page.records.length > 0) return page;
  await nudgeHorizon(db);
  return inTransaction(db, "reader", (tx) => readAfter(tx, Streams.notificationEvents, after, { limit }));
}

export function feedRoutes(ctx: RouteContext): RouteDef[] {
  const { db, feedWaits } = ctx;
  return [
    route(ctx, {
      method: "get",
      path: "/v1/events",
      scope: "reader",
      query: FeedQuery,
      async handle({ query, principal }, res) {
        const after = query.after ?? FEED_START;
        let page: FeedPage;
        if (query.wait === 0 || feedWaits.stopping) {
          page = await readFeed(db, after, query.limit);
        } else {
          // The place is taken before the first read, so a key over its cap costs no read either.
          const slot = feedWaits.reserve(principal.keyId, Date.now() + query.wait * 1000);
          try {
            page = await readFeed(db, after, query.limit);
            if (page.records.length === 0) page = await slot.wait(after, query.limit, (stop) => res.once("close", stop));
          } finally {
            slot.release();
          }
        }
        // Stopping: this connection is not kept alive, so server.close() need not wait for it to idle out.
        if (feedWaits.stopping) res.set("Connection", "close");
        res.json({ events: page.records.map(toFeedEvent), next: encodeCursor(page.next) });
      },
    }),
  ];
}

/** The waits of one app: one shared poller of the feed (src/http/feedWaits.ts). */
export function createFeedWaits(ctx: Pick<RouteContext, "db" | "metrics" | "feedPollMs" | "feedWaitLimits">): FeedWaits {
  return new FeedWaits({
    read: (after, limit) => readFeed(ctx.db, after, limit),
    cursorOf,
    compare: compareCursors,
    pollMs: ctx.feedPollMs ?? DEFAULT_FEED_POLL_MS,
    limits: ctx.feedWaitLimits,
    waiting: ctx.metrics?.feedWaiting,
    polls: ctx.metrics?.feedPolls,
  });
}
