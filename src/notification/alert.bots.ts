import type { z } from "zod";
import { transactionalConsumer, type TransactionalBot } from "../bots/bot";
import type { Channel } from "../entities/entity.schemas";
import { append, appendOne } from "../streams/append";
import type { StreamRecord } from "../streams/interfaces";
import { Streams } from "./streams";
import { findRecords, getByPosition } from "../streams/read";
import { channelOf } from "./channels";
import { alertOperationId } from "./ids";
import {
  AlertInternalTeamOp,
  FAILURE_EVENT_TYPES,
  NOT_SENT_EVENT_TYPES,
  NotificationRecordTypes,
  ResendNotificationOp,
  SendNotificationRequestedEvent,
  SendOutcomeEvent,
  notificationEventSchemas,
  type NotificationEventType,
} from "./notification.schemas";
import { notificationEvent, type NotificationDeps } from "./notification.bot";
import { handleResend } from "./resend";

/**
 * Reacts to a failure outcome on the notification event stream by queueing
 * an internal operation. Alerts themselves are plain email/Slack operations
 * whose outcomes no saga awaits, so a failed alert is recorded on its channel
 * stream and never raises another alert.
 */
export function createReactionBot(): TransactionalBot<NotificationDeps> {
  return {
    ...transactionalConsumer(Streams.notificationEvents, "reaction_bot"),
    async handle({ tx, record, deps }) {
      const type = record.type as NotificationEventType;
      const alerting = FAILURE_EVENT_TYPES.includes(type) || (deps.notification.alertOnNotSent === true && NOT_SENT_EVENT_TYPES.includes(type));
      if (!alerting) return;
      await appendOne(tx, Streams.notificationInternalOperations, {
        id: record.id,
        type: NotificationRecordTypes.AlertInternalTeamOp,
        payload: AlertInternalTeamOp.parse({
          failureEventType: record.type,
          failureEvent: { stream: record.stream, position: record.position },
        }),
        causedBy: { stream: record.stream, position: record.position },
      });
    },
  };
}

const HEADLINES: Partial<Record<NotificationEventType, string>> = {
  CouldNotGetOrUseAudienceEvent: "the entity could not be found",
  AudienceOptedOutOfAllChannelsEvent: "the entity opted out of every channel",
  CouldNotPrepareToSendOnAnyChannelEvent: "no channel could be prepared",
  SentOnSomePreparedChannelsEvent: "it was sent on some channels only",
  CouldNotSendOnAnyPreparedChannelEvent: "it could not be sent on any channel",
  NotificationDelayedEvent: "it has no outcome yet (a channel is still retrying or waiting)",
};

/**
 * A statement an operator can paste to see the notification's events. The id
 * is a SQL string literal (quotes doubled): a record id written by a SQL
 * client can hold any character but a control one.
 */
export function askQuery(id: string): string {
  return `select * from notification.events where id = '${id.replace(/'/g, "''")}' order by position;`;
}

/** The alert's text: what failed and why, from the notification's own events. */
function describeFailure(id: string, failure: StreamRecord, requested: StreamRecord | undefined): { subject: string; text: string } {
  const type = failure.type as NotificationEventType;
  const verb = type === "NotificationDelayedEvent" ? "is delayed" : "failed";
  const req = requested ? SendNotificationRequestedEvent.parse(requested.payload) : null;
  const lines = [
    `Notification ${id} ${verb}: ${HEADLINES[type] ?? type}.`,
    "",
    `Entity: ${req?.entityId ?? "unknown"}`,
    `Subject: ${req?.subject ?? "unknown"}`,
    `Outcome: ${type} (notification.events position ${failure.position}, ${failure.recordedAt.toISOString()})`,
  ];
  const parsed = notificationEventSchemas[type].parse(failure.payload) as Record<string, unknown>;
  if (type.startsWith("Sent") || type.startsWith("CouldNotSend")) {
    const outcome = SendOutcomeEvent.parse(parsed);
    lines.push("", "Channels:");
    for (const op of outcome.operations) {
      lines.push(`- ${op.channel} (${op.operationId}): ${op.outcome}${op.error ? `: ${op.error}` : ""}`);
    }
  } else {
    lines.push("", `Details: ${JSON.stringify(parsed)}`);
  }
  lines.push("", `Ask: ${askQuery(id)}`);
  return { subject: `[tidings] notification ${id} ${verb}: ${HEADLINES[type] ?? type}`, text: lines.join("\n") };
}

/**
 * Executes AlertInternalTeamOp: an email (and optionally a Slack message) to
 * the internal team; and an operator's ResendNotificationOp (src/notification/resend.ts).
 */
export function createInternalOperationBot(): TransactionalBot<NotificationDeps> {
  return {
    ...transactionalConsumer(Streams.notificationInternalOperations, "internal_operation_bot"),
    schemas: {
      [NotificationRecordTypes.AlertInternalTeamOp]: AlertInternalTeamOp,
      [NotificationRecordTypes.ResendNotificationOp]: ResendNotificationOp,
    },
    async handle(ctx) {
      if (ctx.record.type === NotificationRecordTypes.ResendNotificationOp) return handleResend(ctx);
      const { tx, record, deps } = ctx;
      const op = record.payload as z.infer<typeof AlertInternalTeamOp>;
      const id = record.id;
      const failure = await getByPosition(tx, op.failureEvent.stream, op.failureEvent.position);
      if (!failure) throw new Error(`failure event ${op.failureEvent.stream}#${op.failureEvent.position} not found`);
      const [requested] = await findRecords(tx, Streams.notificationEvents, { ids: [id], types: ["SendNotificationRequestedEvent"], limit: 1 });
      const { subject, text } = describeFailure(id, failure, requested);
      const cause = { stream: record.stream, position: record.position };
      const team = deps.notification;
      // The team's destinations: email always, Slack when configured.
      const destinations: Array<[Channel, string]> = [["email", team.internalTeamEmail]];
      if (team.internalTeamSlackChannel) destinations.push(["slack", team.internalTeamSlackChannel]);
      const operations: Array<{ channel: Channel; operationId: string; destination: string }> = [];
      for (const [channel, destination] of destinations) {
        const operationId = alertOperationId(id, record.position, channel);
        const descriptor = channelOf(channel);
        const message = {
          operationId,
          notificationId: id,
          purpose: "internal_alert" as const,
          entityId: null,
          destination,
          subject,
          text,
          preformatted: true,
          tags: { alert: "failed-notification" },
        };
        await append(tx, descriptor.streams.operations, [{ id, causedBy: cause, ...descriptor.operation(message, team) }]);
        operations.push({ channel, operationId, destination });
      }

      await appendOne(
        tx,
        Streams.notificationEvents,
        notificationEvent(record, "FailedNotificationSentToInternalTeamEvent", {
          failureEventType: op.failureEventType,
          operations,
        }),
      );
    },
  };
}
