import type { Response } from "express";
import type { Gauge } from "prom-client";
import { inTransaction, type Db } from "../db/database";
import type { StreamRecord } from "../streams/interfaces";
import { Streams } from "../streams/names";
import { FEED_START, cursorAfter, encodeCursor, nudgeHorizon, readAfter, type FeedCursor } from "../streams/read";
import { requireScope } from "./auth";
import type { ApiContext, RouteDef } from "./routes";
import { FeedQuery } from "./schemas";
import { parseInput } from "./validation";

export const DEFAULT_FEED_POLL_MS = 250;

function toFeedEvent(r: StreamRecord) {
  return {
    cursor: encodeCursor(cursorAfter(r)),
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
 * Read the feed after `after`; when it is empty and `waitMs` > 0, look again
 * every `pollMs` until an event is there, the wait is over, or the client
 * has gone. No connection is held between looks.
 */
async function readOrWait(
  db: Db,
  after: FeedCursor,
  limit: number,
  waitMs: number,
  pollMs: number,
  res: Response,
  waiting: Gauge | undefined,
): Promise<{ records: StreamRecord[]; next: FeedCursor }> {
  const deadline = Date.now() + waitMs;
  let gone = false;
  let counted = false;
  const onClose = () => (gone = true);
  res.on("close", onClose);
  try {
    for (;;) {
      const page = await inTransaction(db, "reader", (tx) => readAfter(tx, Streams.notificationEvents, after, { limit }));
      // Events wait at the horizon: move it and look again at once.
      if (page.stalled && page.records.length === 0) {
        await nudgeHorizon(db);
        continue;
      }
      const left = deadline - Date.now();
      if (page.records.length > 0 || left <= 0 || gone) return page;
      if (!counted) waiting?.inc();
      counted = true;
      await new Promise((resolve) => setTimeout(resolve, Math.min(pollMs, left)));
    }
  } finally {
    res.off("close", onClose);
    if (counted) waiting?.dec();
  }
}

export function feedRoutes(ctx: ApiContext): RouteDef[] {
  const { db } = ctx;
  return [
    {
      method: "get",
      path: "/v1/events",
      handlers: [
        requireScope(db, "reader"),
        async (req, res) => {
          const query = parseInput(FeedQuery, req.query, "query");
          const after = query.after ?? FEED_START;
          const pollMs = ctx.feedPollMs ?? DEFAULT_FEED_POLL_MS;
          const page = await readOrWait(db, after, query.limit, query.wait * 1000, pollMs, res, ctx.metrics?.feedWaiting);
          res.json({ events: page.records.map(toFeedEvent), next: encodeCursor(page.next) });
        },
      ],
    },
  ];
}
