import { z } from "zod";
import { Channel } from "../entities/entity.schemas";
import type { StreamRecord } from "../streams/interfaces";
import {
  AudienceOptedOutOfAllChannelsEvent,
  CouldNotGetOrUseAudienceEvent,
  CouldNotPrepareToSendOnAnyChannelEvent,
  FailedNotificationSentToInternalTeamEvent,
  FellBackToNextChannelEvent,
  NotificationCancelledEvent,
  PreparedToSendOnChannelsEvent,
  ResendRequestedEvent,
  SendNotificationRequestedEvent,
  SendOutcomeEvent,
  type NotificationEventType,
} from "./notification.schemas";

/**
 * The notification aggregate: what the notification event stream says, folded
 * in order. Snapshots store it; views are built from it.
 */
export const NotificationAggregate = z.object({
  id: z.string(),
  status: z.enum(["requested", "sending", "sent", "partially_sent", "failed", "not_sent", "cancelled"]),
  entityId: z.string(),
  entityName: z.string().nullable(),
  subject: z.string(),
  tags: z.record(z.string(), z.string()),
  requestedAt: z.string(),
  updatedAt: z.string(),
  /** A scheduled notification's time (`sendAt`); absent: sent at once. */
  sendAt: z.string().optional(),
  channels: z.array(
    z.object({
      channel: Channel,
      operationId: z.string(),
      destination: z.string(),
      outcome: z.enum(["pending", "succeeded", "failed"]),
      error: z.string().nullable(),
    }),
  ),
  skipped: z.array(z.object({ channel: Channel, reason: z.string() })),
  outcome: z.object({ type: z.string(), at: z.string(), timedOut: z.boolean(), deliveredBy: Channel.optional() }).nullable(),
  failureReason: z.string().nullable(),
  alert: z.object({ at: z.string(), operations: z.array(z.object({ channel: Channel, operationId: z.string(), destination: z.string() })) }).nullable(),
  /** Operators' resends, oldest first: who, why, and per channel the operation replaced and the new one (absent: never resent). */
  resends: z
    .array(
      z.object({
        at: z.string(),
        requestedBy: z.string(),
        reason: z.string(),
        operations: ResendRequestedEvent.shape.operations,
        skipped: ResendRequestedEvent.shape.skipped,
      }),
    )
    .optional(),
  /** Position in notification.events of the last event applied, and how many were. */
  lastPosition: z.number().int(),
  eventCount: z.number().int(),
});
export type NotificationAggregate = z.infer<typeof NotificationAggregate>;

/** Apply one notification event. Events before the creation event are ignored (none should exist). */
export function applyEvent(state: NotificationAggregate | null, event: StreamRecord): NotificationAggregate | null {
  const at = event.recordedAt.toISOString();
  const type = event.type as NotificationEventType;
  if (type === "SendNotificationRequestedEvent") {
    const e = SendNotificationRequestedEvent.parse(event.payload);
    if (state) return { ...state, lastPosition: event.position, eventCount: state.eventCount + 1, updatedAt: at };
    return {
      id: event.id,
      status: "requested",
      entityId: e.entityId,
      entityName: null,
      subject: e.subject,
      tags: e.tags,
      // A scheduled one's request time, not when its time came (or it was cancelled).
      requestedAt: e.requestedAt ?? at,
      updatedAt: at,
      ...(e.sendAt !== undefined ? { sendAt: e.sendAt } : {}),
      channels: [],
      skipped: [],
      outcome: null,
      failureReason: null,
      alert: null,
      lastPosition: event.position,
      eventCount: 1,
    };
  }
  if (!state) return null;
  const next: NotificationAggregate = { ...state, lastPosition: event.position, eventCount: state.eventCount + 1, updatedAt: at };
  switch (type) {
    case "CouldNotGetOrUseAudienceEvent":
      return { ...next, status: "failed", outcome: { type, at, timedOut: false }, failureReason: CouldNotGetOrUseAudienceEvent.parse(event.payload).reason };
    case "AudienceOptedOutOfAllChannelsEvent": {
      const e = AudienceOptedOutOfAllChannelsEvent.parse(event.payload);
      return notSent(next, e, { type, at }, "opted out of every channel");
    }
    case "CouldNotPrepareToSendOnAnyChannelEvent": {
      const e = CouldNotPrepareToSendOnAnyChannelEvent.parse(event.payload);
      return notSent(next, e, { type, at }, e.skipped.map((s) => `${s.channel}: ${s.reason}`).join("; ") || "no channel wanted");
    }
    case "PreparedToSendOnAllChannelsEvent":
    case "PreparedToSendOnSomeChannelsEvent": {
      const e = PreparedToSendOnChannelsEvent.parse(event.payload);
      return {
        ...next,
        status: "sending",
        entityName: e.entityName,
        skipped: e.skipped,
        channels: e.prepared.map((p) => ({ channel: p.channel, operationId: p.operationId, destination: p.destination, outcome: "pending" as const, error: null })),
      };
    }
    case "FellBackToNextChannelEvent": {
      // delivery: fallback: the channel tried failed for good; the next one is on its way.
      const e = FellBackToNextChannelEvent.parse(event.payload);
      const channels = next.channels.map((c) => (c.operationId === e.failed.operationId ? { ...c, outcome: "failed" as const, error: e.failed.error } : c));
      if (!channels.some((c) => c.operationId === e.next.operationId)) {
        channels.push({ channel: e.next.channel, operationId: e.next.operationId, destination: e.next.destination, outcome: "pending", error: null });
      }
      return { ...next, channels };
    }
    case "SentOnAllPreparedChannelsEvent":
    case "SentOnSomePreparedChannelsEvent":
    case "CouldNotSendOnAnyPreparedChannelEvent": {
      const e = SendOutcomeEvent.parse(event.payload);
      const channels = next.channels.map((c) => {
        const op = e.operations.find((o) => o.operationId === c.operationId);
        return op ? { ...c, outcome: op.outcome, error: op.error } : c;
      });
      const status = type === "SentOnAllPreparedChannelsEvent" ? "sent" : type === "SentOnSomePreparedChannelsEvent" ? "partially_sent" : "failed";
      const failed = channels.filter((c) => c.outcome === "failed");
      return {
        ...next,
        channels,
        status,
        outcome: { type, at, timedOut: e.timedOut, ...(e.deliveredBy ? { deliveredBy: e.deliveredBy } : {}) },
        // Delivered (by a fallback channel, perhaps): nothing failed as far as the notification goes.
        failureReason: status !== "sent" && failed.length ? failed.map((c) => `${c.channel}: ${c.error ?? "failed"}`).join("; ") : null,
      };
    }
    case "ResendRequestedEvent": {
      // An operator's resend: each resent channel now stands for its new operation (new destination,
      // pending again) and the notification is being sent until the new saga's outcome.
      const e = ResendRequestedEvent.parse(event.payload);
      const resends = [...(next.resends ?? []), { at, requestedBy: e.requestedBy, reason: e.reason, operations: e.operations, skipped: e.skipped }];
      if (e.operations.length === 0) return { ...next, resends };
      const channels = next.channels.filter((c) => !e.operations.some((o) => o.previousOperationId === c.operationId || o.operationId === c.operationId));
      for (const o of e.operations) {
        channels.push({ channel: o.channel, operationId: o.operationId, destination: o.destination, outcome: "pending", error: null });
      }
      const order = (c: { channel: string }) => next.channels.findIndex((p) => p.channel === c.channel);
      channels.sort((a, b) => order(a) - order(b));
      return { ...next, resends, channels, status: "sending", outcome: null, failureReason: null };
    }
    // A scheduled notification cancelled before its time (src/notification/schedule.ts): an outcome, not a failure.
    case "NotificationCancelledEvent": {
      const { sendAt } = NotificationCancelledEvent.parse(event.payload);
      return { ...next, status: "cancelled", ...(sendAt !== null ? { sendAt } : {}), outcome: { type, at, timedOut: false }, failureReason: null };
    }
    case "FailedNotificationSentToInternalTeamEvent":
      return { ...next, alert: { at, operations: FailedNotificationSentToInternalTeamEvent.parse(event.payload).operations } };
    default:
      return next;
  }
}

export function foldEvents(state: NotificationAggregate | null, events: readonly StreamRecord[]): NotificationAggregate | null {
  return events.reduce<NotificationAggregate | null>(applyEvent, state);
}

/** Not sent (no channel to use): the outcome, the channels skipped and why, and whom it was for by name where the event says. */
function notSent(
  next: NotificationAggregate,
  e: { entityName?: string | undefined; skipped: NotificationAggregate["skipped"] },
  outcome: { type: string; at: string },
  failureReason: string,
): NotificationAggregate {
  return { ...next, status: "not_sent", entityName: e.entityName ?? next.entityName, skipped: e.skipped, outcome: { ...outcome, timedOut: false }, failureReason };
}
