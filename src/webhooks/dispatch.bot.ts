import type { CatchUpBot } from "../bots/bot";
import { allChannels } from "../notification/channels";
import { Streams } from "../notification/streams";
import { append } from "../streams/append";
import type { NewRecord, StreamRecord } from "../streams/interfaces";
import { activeEndpoints } from "./endpoint.repository";
import { webhookMessageId, webhookMessageOf } from "./messages";
import { DeliverWebhookOp, WebhookBody, WebhookRecordTypes } from "./webhook.schemas";
import { WEBHOOK_BOT, WEBHOOK_DISPATCH_CHECKPOINT, WebhookStreams } from "./webhook.streams";

/**
 * A channel's outcome comes before the notification events that react to it.
 * They can share a transaction (the saga follows a send inline, so both rows
 * carry the same feed key and the same recorded_at, which is the transaction's
 * start), so the tie is broken by stream: channel events first.
 */
const followed = [...allChannels.map((c) => c.streams.events), Streams.notificationEvents];

/** Commit order across the streams followed: a record written in reaction to another comes after it. */
function byFeedOrder(a: StreamRecord, b: StreamRecord): number {
  const ka = BigInt(a.feedKey);
  const kb = BigInt(b.feedKey);
  if (ka !== kb) return ka < kb ? -1 : 1;
  if (a.stream !== b.stream) return followed.indexOf(a.stream) - followed.indexOf(b.stream);
  return a.position - b.position;
}

/**
 * Follows the notification's events and its channels' events from a
 * checkpoint (like the projection) and appends, for each status change, one
 * DeliverWebhookOp per endpoint subscribed to it that was registered by the
 * time the change was recorded. The batch's records are taken in commit
 * order across the streams, so a notification's deliveries are appended in
 * the order its changes happened; the delivery bot sends them in that order
 * per endpoint. The appends and the checkpoint's move commit together: a
 * crash repeats the batch, never doubles it.
 */
export function createWebhookDispatchBot(): CatchUpBot<unknown> {
  return {
    kind: "catch-up",
    checkpoint: WEBHOOK_DISPATCH_CHECKPOINT,
    concern: WEBHOOK_BOT,
    actor: WEBHOOK_BOT,
    streams: followed,
    batchSize: 500,
    async handleBatch({ tx, records }) {
      const messages = [...records].sort(byFeedOrder).flatMap((record) => {
        const message = webhookMessageOf(record);
        return message ? [{ record, message }] : [];
      });
      if (messages.length === 0) return;
      const endpoints = await activeEndpoints(tx);
      if (endpoints.length === 0) return;
      const deliveries: NewRecord[] = [];
      for (const { record, message } of messages) {
        const body = JSON.stringify(WebhookBody.parse({ type: message.type, timestamp: record.recordedAt.toISOString(), data: message.data }));
        for (const endpoint of endpoints) {
          if (endpoint.registeredAt > record.recordedAt) continue;
          if (endpoint.events && !endpoint.events.includes(message.type)) continue;
          deliveries.push({
            id: message.notificationId,
            type: WebhookRecordTypes.DeliverWebhookOp,
            payload: DeliverWebhookOp.parse({
              endpointId: endpoint.id,
              url: endpoint.url,
              messageId: webhookMessageId(record),
              eventType: message.type,
              notificationId: message.notificationId,
              body,
            }),
            causedBy: { stream: record.stream, position: record.position },
          });
        }
      }
      await append(tx, WebhookStreams.deliveries, deliveries);
    },
  };
}
