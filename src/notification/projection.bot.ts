import { sql } from "kysely";
import type { TransactionalBot } from "../bots/bot";
import { appendOne } from "../streams/append";
import { Streams } from "../streams/names";
import { NotificationAggregate } from "./aggregate";
import { NotificationRecordTypes } from "./notification.schemas";
import type { NotificationDeps } from "./notification.bot";
import { buildView, latestViewJson, loadNotification } from "./projection";

/**
 * After each change of a notification (its own events, and its channels'
 * events), append its UI view; on notification events, also a snapshot at
 * terminal states and every N events. One notification at a time (advisory
 * lock), so the last view written is always built from the latest events.
 */
function createProjectionBot(stream: string): TransactionalBot<NotificationDeps> {
  return {
    kind: "transactional",
    stream,
    concern: "projection_bot",
    actor: "projection_bot",
    // Every event of a notification refreshes the same view: one refresh per notification per batch.
    batch: { maxSize: 64, coalesceById: true },
    async handle({ tx, record, deps }) {
      const id = record.id;
      await sql`select pg_advisory_xact_lock(hashtextextended(${`projection ${id}`}, 0))`.execute(tx);
      const { aggregate, snapshot } = await loadNotification(tx, id);
      if (!aggregate) return; // not a notification (nothing requested under this id)
      const cause = { stream: record.stream, position: record.position };

      const view = await buildView(tx, aggregate);
      const json = JSON.stringify(view);
      const previous = await latestViewJson(tx, id);
      if (previous === null || JSON.stringify(JSON.parse(previous)) !== json) {
        await appendOne(tx, Streams.notificationViews, { id, type: NotificationRecordTypes.NotificationView, payload: view, causedBy: cause });
      }

      // Snapshots: at the terminal state, and whenever N events piled up since the last one.
      if (stream !== Streams.notificationEvents) return;
      const sinceSnapshot = aggregate.eventCount - (snapshot?.aggregate.eventCount ?? 0);
      const reachedTerminal = aggregate.outcome !== null && !snapshot?.aggregate.outcome;
      if (sinceSnapshot > 0 && (reachedTerminal || sinceSnapshot >= deps.notification.snapshotEvery)) {
        await appendOne(tx, Streams.notificationSnapshots, {
          id,
          type: NotificationRecordTypes.NotificationSnapshot,
          payload: { aggregate: NotificationAggregate.parse(aggregate), asOfPosition: aggregate.lastPosition },
          causedBy: cause,
        });
      }
    },
  };
}

export function createProjectionBots(): TransactionalBot<NotificationDeps>[] {
  return [Streams.notificationEvents, Streams.emailEvents, Streams.slackEvents].map(createProjectionBot);
}
