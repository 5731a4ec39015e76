import { inTransaction } from "../db/database";
import { ValidationError } from "../errors/errors";
import { Streams } from "../notification/streams";
import { FEED_START, cursorAfter, decodeCursor, encodeCursor, feedHorizon, type FeedCursor } from "../streams/read";
import { readFeed, toFeedEvent } from "./feed";
import type { FeedPage } from "./feedWaits";
import { EventsStreamQuery } from "./consoleSchemas";
import { route, type RouteContext, type RouteDef } from "./routes";

/** How long one wait for new events lasts before the stream sends a keep-alive comment and waits again. */
export const STREAM_WAIT_MS = 15_000;
const PAGE = 100;

/**
 * Where a stream starts: after the Last-Event-ID a reconnecting client
 * sends (each event's id is its feed cursor), else after `after`; `now`
 * is the feed horizon, below which every record is already readable, so
 * what follows it is exactly what was not yet served.
 */
async function startCursor(ctx: RouteContext, lastEventId: string | undefined, after: string | undefined): Promise<FeedCursor> {
  const given = lastEventId?.trim() || after;
  if (given === undefined) return FEED_START;
  if (given === "now") {
    const horizon = await inTransaction(ctx.db, "reader", (tx) => feedHorizon(tx, [Streams.notificationEvents]));
    return { key: horizon, position: 0 };
  }
  try {
    return decodeCursor(given);
  } catch (error) {
    const where = lastEventId?.trim() ? "Last-Event-ID" : "after";
    throw new ValidationError(`invalid ${where}: ${(error as Error).message}`, [{ path: where, message: "not a cursor this feed returned" }]);
  }
}

/**
 * GET /v1/events/stream: the notification event feed as server-sent events,
 * for browsers and anyone who would rather hold one connection than
 * long-poll. It is the same gap-safe feed as GET /v1/events (readFeed) and
 * waits the same way, as one of the shared poller's waiters (FeedWaits), so
 * a stream costs no read of its own while nothing happens and counts
 * against the key's cap of waiting requests. Each event's `id` is its
 * cursor: a client that reconnects with Last-Event-ID resumes right after
 * the last event it received, missing none and repeating none.
 */
export function eventsStreamRoutes(ctx: RouteContext): RouteDef[] {
  const { db, feedWaits } = ctx;
  return [
    route(ctx, {
      method: "get",
      path: "/v1/events/stream",
      scope: "reader",
      query: EventsStreamQuery,
      async handle({ query, principal, req }, res) {
        let after = await startCursor(ctx, req.get("last-event-id"), query.after);
        // The first place among the waiters is taken before anything is sent, so a key over its cap gets a plain 429.
        let slot = feedWaits.reserve(principal.keyId, Date.now() + STREAM_WAIT_MS);
        let gone = false;
        const stops = new Set<() => void>();
        res.once("close", () => {
          gone = true;
          for (const stop of stops) stop();
        });
        res.status(200).set({
          "Content-Type": "text/event-stream; charset=utf-8",
          "Cache-Control": "no-store",
          // Proxies such as nginx would otherwise hold the events back.
          "X-Accel-Buffering": "no",
          // A stream ends only when the client leaves or the process stops; then the connection goes with it, so server.close() need not wait for it to idle out.
          Connection: "close",
        });
        res.flushHeaders();
        // The client's reconnection delay, then a first line so it knows the stream is open.
        res.write(`retry: 2000\n: stream open after ${encodeCursor(after)}\n\n`);
        try {
          while (!gone && !feedWaits.stopping) {
            let page: FeedPage = await readFeed(db, after, PAGE);
            if (page.records.length === 0) {
              page = await slot.wait(after, PAGE, (stop) => {
                stops.add(stop);
              });
              stops.clear();
            }
            for (const record of page.records) {
              const event = toFeedEvent(record);
              res.write(`id: ${event.cursor}\nevent: ${record.type}\ndata: ${JSON.stringify(event)}\n\n`);
              after = cursorAfter(record);
            }
            if (page.records.length === 0) res.write(": keep-alive\n\n");
            slot.release();
            if (gone || feedWaits.stopping) break;
            slot = feedWaits.reserve(principal.keyId, Date.now() + STREAM_WAIT_MS);
          }
        } catch {
          // Over the cap, the database out of reach: the stream ends and the client reconnects after `retry`, from its Last-Event-ID.
        } finally {
          slot.release();
          res.end();
        }
      },
    }),
  ];
}
