import { transactionalConsumer, type BatchHandlerContext, type TransactionalBot } from "../bots/bot";
import type { Channel } from "../entities/entity.schemas";
import { getEntities, type EntityVersion } from "../entities/entity.repository";
import { AppendBuffer, existingIds } from "../streams/append";
import type { NewRecord, StreamRecord } from "../streams/interfaces";
import { Streams } from "./streams";
import { channelOf } from "./channels";
import { channelOperationId } from "./ids";
import {
  NotificationDelayWatch,
  NotificationSaga,
  NotificationEventTypes,
  NotificationRecordTypes,
  SendNotificationToEntityOp,
  notificationEventSchemas,
  type ChannelPlan,
  type NotificationEventType,
} from "./notification.schemas";
import { resolveChannels } from "./preferences";
import { lockNotification } from "./locks";
import { fitSlackText } from "../slack/format";
import { SendSlackMessageOp } from "../slack/slack.schemas";

export interface NotificationSettings {
  /**
   * How long past its last scheduled retry a channel operation may take to
   * have an outcome; the saga's deadline is this plus the longest retry
   * schedule of the channels it waits for.
   */
  sagaDeadlineMs: number;
  /** Each channel's retry schedule (delays before each further attempt), as the runner applies them. */
  retrySchedules?: Partial<Record<Channel, readonly number[]>>;
  internalTeamEmail: string;
  internalTeamSlackChannel?: string;
  /** Write a snapshot every N notification events. */
  snapshotEvery: number;
  /** Alert the internal team also when a notification is not sent because its entity has no channel to use. */
  alertOnNotSent?: boolean;
  /** Alert the internal team when a notification still has no outcome this long after it was prepared (unset: never). */
  delayedAlertAfterMs?: number;
  /** Right-hand side of the Message-IDs of email operations (src/email/sender.ts messageIdDomain). */
  messageIdDomain: string;
  /** Categories no opt-out stops (CRITICAL_CATEGORIES), e.g. security notices. */
  criticalCategories?: readonly string[];
}

export interface NotificationDeps {
  notification: NotificationSettings;
}

/**
 * When the saga stops waiting for these channels: the longest of their retry
 * schedules (every delay at its +10% jitter), plus the settled grace for the
 * last attempt. A greylisted email is retried for hours, not given up after
 * the grace alone.
 */
export function sagaDeadline(now: Date, channels: readonly Channel[], settings: NotificationSettings): Date {
  const longest = Math.max(0, ...channels.map((c) => (settings.retrySchedules?.[c] ?? []).reduce((sum, d) => sum + d * 1.1, 0)));
  return new Date(now.getTime() + Math.ceil(longest) + settings.sagaDeadlineMs);
}

/** A notification event for this record's tracking id, validated with its schema. */
export function notificationEvent(cause: StreamRecord, type: NotificationEventType, payload: unknown, id = cause.id): NewRecord {
  return {
    id,
    type,
    payload: notificationEventSchemas[type].parse(payload),
    causedBy: { stream: cause.stream, position: cause.position },
  };
}

/** The notification's creation event, from its client operation: when it is taken up, or when it is cancelled before its time. */
export function requestedEvent(record: StreamRecord): NewRecord {
  const op = record.payload as SendNotificationToEntityOp;
  return notificationEvent(record, "SendNotificationRequestedEvent", {
    entityId: op.entityId,
    subject: op.subject,
    channelsRequested: op.channels ?? null,
    tags: op.tags,
    ...(op.category !== undefined ? { category: op.category } : {}),
    ...(op.sendAt !== undefined ? { sendAt: op.sendAt, requestedAt: record.recordedAt.toISOString() } : {}),
    clientOperation: { stream: record.stream, position: record.position },
  });
}

/**
 * Handles SendNotificationToEntityOp, in one transaction: the notification's
 * creation event, the audience, its channel preferences, the prepared event,
 * the saga, then the channel operations. Set-based: a batch of operations
 * costs two lookups and one append per (stream, strategy), whatever its size.
 */
export function createNotificationBot(): TransactionalBot<NotificationDeps> {
  const handleBatch = async ({ tx, records: all, deps, now, out: given }: BatchHandlerContext<NotificationDeps>) => {
    // A scheduled operation that comes early (a re-drive) waits: only handle() can self-cancel, so the
    // batch is handed back, and the runner handles each record on its own.
    if (all.some((r) => isEarly(r, now))) throw new Error("a scheduled notification in the batch is not due yet: handled one at a time");
    // Two client operations with one tracking id (appended by hand, write_always) make one
    // notification: the first prepares it, and the saga it writes keeps any later run from preparing it again.
    const unique = all.filter((r, i) => all.findIndex((other) => other.id === r.id) === i);
    // A scheduled notification may have been cancelled: its lock orders this run and the cancel (src/notification/schedule.ts).
    const scheduled = unique.filter((r) => (r.payload as SendNotificationToEntityOp).sendAt !== undefined).map((r) => r.id);
    for (const id of [...scheduled].sort()) await lockNotification(tx, id);
    const cancelled = scheduled.length === 0 ? new Set<string>() : await existingIds(tx, Streams.notificationEvents, scheduled, NotificationEventTypes.NotificationCancelledEvent);
    const records = unique.filter((r) => !cancelled.has(r.id));
    const ids = records.map((r) => r.id);
    // A saga exists only if an earlier run prepared the channel operations
    // (it committed them together): a re-run or re-drive must not make more.
    const [prepared, entities] = await Promise.all([
      existingIds(tx, Streams.notificationSagas, ids, NotificationRecordTypes.NotificationSaga),
      getEntities(tx, [...new Set(records.map((r) => (r.payload as SendNotificationToEntityOp).entityId))]),
    ]);
    // The runner's buffer when it gives one: it writes them, and claims the channel operations for inline sends.
    const out = given ?? new AppendBuffer();
    for (const record of records) {
      planNotification(out, record, { alreadyPrepared: prepared.has(record.id), version: entities.get((record.payload as SendNotificationToEntityOp).entityId), deps, now });
    }
    if (!given) await out.flush(tx);
  };
  return {
    ...transactionalConsumer(Streams.notificationClientOperations, "notification_bot"),
    schemas: { [NotificationRecordTypes.SendNotificationToEntityOp]: SendNotificationToEntityOp },
    async handle({ tx, record, deps, logger, now, out }) {
      const sendAt = (record.payload as SendNotificationToEntityOp).sendAt;
      if (sendAt !== undefined && isEarly(record, now)) {
        return { retryAfterMs: Date.parse(sendAt) - now.getTime(), reason: `scheduled for ${sendAt}` };
      }
      await handleBatch({ tx, records: [record], deps, logger, now, ...(out ? { out } : {}) });
    },
    handleBatch,
  };
}

/** A scheduled client operation whose time has not come. */
function isEarly(record: StreamRecord, now: Date): boolean {
  const sendAt = (record.payload as SendNotificationToEntityOp).sendAt;
  return sendAt !== undefined && Date.parse(sendAt) > now.getTime();
}

/** The records one client operation leads to, added to `out` in the order they are written. */
function planNotification(
  out: AppendBuffer,
  record: StreamRecord,
  context: { alreadyPrepared: boolean; version: EntityVersion | undefined; deps: NotificationDeps; now: Date },
): void {
  const op = record.payload as SendNotificationToEntityOp;
  const id = record.id;
  out.add(Streams.notificationEvents, requestedEvent(record), "skip_if_id_and_type_exists");
  if (context.alreadyPrepared) return;

  const version = context.version;
  if (!version) {
    out.add(
      Streams.notificationEvents,
      notificationEvent(record, "CouldNotGetOrUseAudienceEvent", {
        entityId: op.entityId,
        reason: `unknown entity "${op.entityId}"`,
      }),
    );
    return;
  }
  const entity = version.entity;
  const critical = op.category !== undefined && (context.deps.notification.criticalCategories ?? []).includes(op.category);
  const resolution = resolveChannels(entity, op.channels, { category: op.category, critical });
  const category = op.category !== undefined ? { category: op.category, ...(critical ? { critical: true } : {}) } : {};
  if (resolution.channels.length === 0) {
    out.add(
      Streams.notificationEvents,
      resolution.allOptedOut
        ? notificationEvent(record, "AudienceOptedOutOfAllChannelsEvent", {
            entityId: entity.id,
            entityName: entity.name,
            // The entity's opt-outs, then those of the category that applied.
            optedOut: [...new Set([...entity.preferences.optedOut, ...resolution.skipped.filter((s) => s.reason.startsWith("opted out")).map((s) => s.channel)])],
            skipped: resolution.skipped,
            ...(op.category !== undefined ? { category: op.category } : {}),
          })
        : notificationEvent(record, "CouldNotPrepareToSendOnAnyChannelEvent", {
            entityId: entity.id,
            entityName: entity.name,
            skipped: resolution.skipped,
          }),
    );
    return;
  }

  const planOf = ({ channel, destination }: { channel: Channel; destination: string }): ChannelPlan => ({
    channel,
    operationId: channelOperationId(id, channel),
    stream: channelOf(channel).streams.operations,
    destination,
  });
  const plans = resolution.channels.map(planOf);
  const fallbacks = resolution.fallbacks.map(planOf);
  out.add(
    Streams.notificationEvents,
    notificationEvent(record, resolution.skipped.length === 0 ? "PreparedToSendOnAllChannelsEvent" : "PreparedToSendOnSomeChannelsEvent", {
      entityId: entity.id,
      entityName: entity.name,
      prepared: plans,
      ...(fallbacks.length > 0 ? { fallbacks } : {}),
      skipped: resolution.skipped,
      entityVersion: version.position,
      ...category,
    }),
  );

  const cause = { stream: record.stream, position: record.position };
  const operation = (plan: ChannelPlan) => channelOperation(plan, op, { id, entityId: entity.id }, context.deps.notification);
  const saga = NotificationSaga.parse({
    awaiting: plans,
    // With fallback channels, every step is awaited in turn; each waits as long as its own channel's schedule.
    deadline: sagaDeadline(
      context.now,
      plans.map((p) => p.channel),
      context.deps.notification,
    ).toISOString(),
    ...(entity.preferences.delivery === "fallback" ? { policy: "fallback", fallbacks: fallbacks.map((plan) => ({ plan, operation: operation(plan) })) } : {}),
    onAllSent: "SentOnAllPreparedChannelsEvent",
    onSomeSent: "SentOnSomePreparedChannelsEvent",
    onNoneSent: "CouldNotSendOnAnyPreparedChannelEvent",
  });
  // Saga and channel operations commit together, so no channel outcome can arrive before someone waits for it.
  out.add(Streams.notificationSagas, { id, type: NotificationRecordTypes.NotificationSaga, payload: saga, causedBy: cause }, "skip_if_id_and_type_exists");

  for (const plan of plans) out.add(plan.stream, { id, ...operation(plan), causedBy: cause });
  // A check for the saga to make later: is there an outcome by then?
  const delayAfter = context.deps.notification.delayedAlertAfterMs;
  if (delayAfter !== undefined) {
    const watch = NotificationDelayWatch.parse({ deadline: new Date(context.now.getTime() + delayAfter).toISOString(), afterMs: delayAfter });
    out.add(Streams.notificationSagas, { id, type: NotificationRecordTypes.NotificationDelayWatch, payload: watch, causedBy: cause }, "skip_if_id_and_type_exists");
  }
}

/**
 * The channel operation that delivers a notification on one channel: all it
 * needs to send (the Naos rule), validated. Written at once, or kept in the
 * saga for a fallback step.
 */
export function channelOperation(
  plan: ChannelPlan,
  op: SendNotificationToEntityOp,
  notification: { id: string; entityId: string },
  settings: Pick<NotificationSettings, "messageIdDomain">,
): { type: string; payload: unknown } {
  const operation = channelOf(plan.channel).operation(
    {
      operationId: plan.operationId,
      notificationId: notification.id,
      purpose: "notification",
      entityId: notification.entityId,
      destination: plan.destination,
      subject: op.subject,
      text: op.text,
      html: op.html,
      markdown: op.markdown,
      tags: op.tags,
    },
    settings,
  );
  // A template's own Slack content is the message's mrkdwn body (sanitised when posted, src/slack/format.ts),
  // in place of one made from the email's Markdown; its Block Kit blocks, when it has them, are the message's blocks.
  if (plan.channel === "slack" && op.slack !== undefined) {
    return {
      type: operation.type,
      payload: SendSlackMessageOp.parse({
        ...(operation.payload as object),
        mrkdwn: fitSlackText(op.slack.mrkdwn),
        ...(op.slack.blocks !== undefined ? { blocks: op.slack.blocks } : {}),
      }),
    };
  }
  return operation;
}
