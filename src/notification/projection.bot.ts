import type { CatchUpBot } from "../bots/bot";
import { append } from "../streams/append";
import type { NewRecord, StreamRecord } from "../streams/interfaces";
import { allChannels } from "./channels";
import { Streams } from "./streams";
import { canonicalJson } from "../util/json";
import { NotificationAggregate } from "./aggregate";
import { NotificationRecordTypes } from "./notification.schemas";
import type { NotificationDeps } from "./notification.bot";
import { buildViews, latestViewsJson, loadLatestNotifications } from "./projection";

/** Checkpoint row of the projection (migrations/0002_notification.sql). */
export const PROJECTION_CHECKPOINT = "notification_views";

/**
 * Follows the notifications' own events and their channels' events from a
 * checkpoint; for every notification a batch touches, appends its UI view
 * when it changed, and a snapshot every N events.
 * Set-based: a batch of any size costs the same handful of queries, so under
 * load one refresh covers many changes of many notifications. One process at
 * a time runs it, so views of one notification are written in order.
 */
export function createProjectionBot(): CatchUpBot<NotificationDeps> {
  return {
    kind: "catch-up",
    checkpoint: PROJECTION_CHECKPOINT,
    concern: "projection_bot",
    actor: "projection_bot",
    streams: [Streams.notificationEvents, ...allChannels.map((c) => c.streams.events)],
    batchSize: 500,
    async handleBatch({ tx, records, deps }) {
      // The newest record of each notification is what its view was refreshed for.
      const causes = new Map<string, StreamRecord>();
      for (const r of records) if (!causes.has(r.id) || causes.get(r.id)!.recordedAt <= r.recordedAt) causes.set(r.id, r);
      const ids = [...causes.keys()].sort();
      const loaded = await loadLatestNotifications(tx, ids);
      const aggregates = ids.flatMap((id) => (loaded.has(id) ? [loaded.get(id)!.aggregate] : []));
      if (aggregates.length === 0) return;
      const [views, previous] = await Promise.all([
        buildViews(tx, aggregates),
        latestViewsJson(
          tx,
          aggregates.map((a) => a.id),
        ),
      ]);

      const newViews: NewRecord[] = [];
      const newSnapshots: NewRecord[] = [];
      views.forEach((view, i) => {
        const aggregate = aggregates[i]!;
        const cause = causes.get(aggregate.id)!;
        const causedBy = { stream: cause.stream, position: cause.position };
        const before = previous.get(aggregate.id);
        // Compared key order aside: jsonb hands keys back in an order of its own.
        if (before === undefined || canonicalJson(JSON.parse(before)) !== canonicalJson(view)) {
          newViews.push({ id: aggregate.id, type: NotificationRecordTypes.NotificationView, payload: view, causedBy });
        }
        // Snapshots whenever N events piled up since the last one: they shorten a long fold. Most
        // notifications end after three or four events, cheaper to fold than a snapshot is to store
        // (it was a tenth of the bytes per notification; docs/performance.md), so they get none.
        const snapshot = loaded.get(aggregate.id)!.snapshot;
        const sinceSnapshot = aggregate.eventCount - (snapshot?.aggregate.eventCount ?? 0);
        if (sinceSnapshot >= deps.notification.snapshotEvery) {
          newSnapshots.push({
            id: aggregate.id,
            type: NotificationRecordTypes.NotificationSnapshot,
            payload: { aggregate: NotificationAggregate.parse(aggregate), asOfPosition: aggregate.lastPosition },
            causedBy,
          });
        }
      });
      await append(tx, Streams.notificationViews, newViews);
      await append(tx, Streams.notificationSnapshots, newSnapshots);
    },
  };
}
