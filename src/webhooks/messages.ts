import { createHash } from "node:crypto";
import { channelOfStream } from "../notification/channels";
import { Streams } from "../notification/streams";
import type { StreamRecord } from "../streams/interfaces";
import type { WebhookEventType } from "./webhook.schemas";

/** What a record of the followed streams tells a webhook endpoint, or null when it tells nothing. */
export interface WebhookMessage {
  notificationId: string;
  type: WebhookEventType;
  data: Record<string, unknown>;
}

/** The outcome events of a notification and the status each reports (the view's statuses). */
const OUTCOMES: Record<string, WebhookEventType> = {
  SentOnAllPreparedChannelsEvent: "notification.sent",
  SentOnSomePreparedChannelsEvent: "notification.partially_sent",
  CouldNotSendOnAnyPreparedChannelEvent: "notification.failed",
  CouldNotGetOrUseAudienceEvent: "notification.failed",
  AudienceOptedOutOfAllChannelsEvent: "notification.not_sent",
  CouldNotPrepareToSendOnAnyChannelEvent: "notification.not_sent",
};

type Payload = Record<string, unknown>;

function pick(payload: Payload, keys: readonly string[]): Payload {
  return Object.fromEntries(keys.filter((k) => payload[k] !== undefined).map((k) => [k, payload[k]]));
}

/**
 * The status change a record of notification.events, email.events or
 * slack.events reports (docs/webhooks.md lists each type and its data).
 * Channel events of internal alerts (operation ids with `:alert-`) are the
 * internal team's business, not the client's: they report nothing.
 */
export function webhookMessageOf(record: StreamRecord): WebhookMessage | null {
  const payload = (record.payload ?? {}) as Payload;
  const base = { notificationId: record.id };
  if (record.stream === Streams.notificationEvents) {
    if (record.type === "SendNotificationRequestedEvent") {
      return { ...base, type: "notification.requested", data: { ...base, ...pick(payload, ["entityId", "subject", "tags"]) } };
    }
    if (record.type === "NotificationCancelledEvent") {
      return { ...base, type: "notification.cancelled", data: { ...base, outcome: record.type, ...pick(payload, ["cancelledBy", "sendAt"]) } };
    }
    const outcome = OUTCOMES[record.type];
    if (!outcome) return null;
    return { ...base, type: outcome, data: { ...base, outcome: record.type, ...pick(payload, ["sent", "failed", "deliveredBy", "timedOut", "reason", "optedOut", "skipped"]) } };
  }
  const channel = channelOfStream(record.stream);
  if (!channel || channel.streams.events !== record.stream) return null;
  const operationId = typeof payload.operationId === "string" ? payload.operationId : "";
  if (operationId.includes(":alert-")) return null;
  const common = { ...base, channel: channel.name, operationId, attempt: payload.attempt };
  if (record.type === channel.outcomeTypes.succeeded) return { ...base, type: "notification.channel.sent", data: common };
  if (record.type === channel.outcomeTypes.failed) {
    return { ...base, type: "notification.channel.failed", data: { ...common, ...pick(payload, ["error", "classification", "reason"]) } };
  }
  if (record.type.endsWith("AttemptFailedEvent")) {
    const retryInMs = typeof payload.retryInMs === "number" ? payload.retryInMs : 0;
    return {
      ...base,
      type: "notification.channel.retrying",
      data: { ...common, error: payload.error, retryInMs, nextAttemptAt: new Date(record.recordedAt.getTime() + retryInMs).toISOString() },
    };
  }
  return null;
}

/**
 * The `webhook-id` of the message reporting this record: derived from the
 * record, so it is the same on every attempt and every re-drive, and a
 * receiver can drop a message it already has.
 */
export function webhookMessageId(record: Pick<StreamRecord, "stream" | "position">): string {
  return "msg_" + createHash("sha256").update(`${record.stream}#${record.position}`).digest("base64url").slice(0, 27);
}
