import type { HandlerContext } from "../bots/bot";
import type { Executor } from "../db/database";
import type { Channel, Entity } from "../entities/entity.schemas";
import { getEntity } from "../entities/entity.repository";
import { NotFoundError } from "../errors/errors";
import { append, appendOne } from "../streams/append";
import type { StreamRecord } from "../streams/interfaces";
import { channelOf } from "./channels";
import { Streams } from "./streams";
import { findRecords, getByPosition } from "../streams/read";
import {
  FellBackToNextChannelEvent,
  NotificationRecordTypes,
  NotificationSaga,
  PreparedToSendOnChannelsEvent,
  ResendNotificationOp,
  ResendRequestedEvent,
  SendNotificationRequestedEvent,
  SendNotificationToEntityOp,
  SendOutcomeEvent,
  type ChannelPlan,
  type OperationOutcome,
} from "./notification.schemas";
import { channelOperation, notificationEvent, sagaDeadline, type NotificationDeps } from "./notification.bot";
import { resolveChannels, type CategoryContext } from "./preferences";
import { lockSagas } from "./locks";

/**
 * Resending a notification's failed channels from the entity as it is now.
 * A re-drive repeats a failed channel operation exactly as it was (to the
 * old address: right when the outside world was at fault). A resend instead
 * prepares NEW channel operations for those channels, from the entity's
 * current contact details and preferences, linked to the failed ones: the
 * operator's ResendNotificationOp names them, and every record the resend
 * writes is caused by it. The operator only ever writes that request
 * (src/admin/redrive.ts resendNotification); internal_operation_bot prepares
 * it here.
 */

/** The events that decide a notification's sending outcome (the saga's). */
export const SEND_OUTCOME_TYPES = ["SentOnAllPreparedChannelsEvent", "SentOnSomePreparedChannelsEvent", "CouldNotSendOnAnyPreparedChannelEvent"] as const;

/** The n-th resend of a notification gets operation ids of its own: `<tracking id>:slack:resend-2`. */
export function resendOperationId(trackingId: string, channel: Channel, n: number): string {
  return `${trackingId}:${channel}:resend-${n}`;
}

/** The operation stream of a channel. */
export const channelStream = (channel: Channel): string => channelOf(channel).streams.operations;

/** Every channel operation a notification's events planned (prepared, fallen back to, resent), by operation id. */
export function plannedOperations(events: readonly StreamRecord[]): Map<string, ChannelPlan> {
  const plans = new Map<string, ChannelPlan>();
  for (const e of events) {
    if (e.type === "PreparedToSendOnAllChannelsEvent" || e.type === "PreparedToSendOnSomeChannelsEvent") {
      const prepared = PreparedToSendOnChannelsEvent.parse(e.payload);
      for (const p of [...prepared.prepared, ...(prepared.fallbacks ?? [])]) plans.set(p.operationId, p);
    } else if (e.type === "FellBackToNextChannelEvent") {
      const next = FellBackToNextChannelEvent.parse(e.payload).next;
      plans.set(next.operationId, next);
    } else if (e.type === "ResendRequestedEvent") {
      for (const o of ResendRequestedEvent.parse(e.payload).operations) {
        plans.set(o.operationId, { channel: o.channel, operationId: o.operationId, stream: channelStream(o.channel), destination: o.destination });
      }
    }
  }
  return plans;
}

/** The notification's latest sending outcome, if it has one. */
export function latestSendOutcome(events: readonly StreamRecord[]): { record: StreamRecord; outcome: SendOutcomeEvent } | null {
  const record = events.filter((e) => (SEND_OUTCOME_TYPES as readonly string[]).includes(e.type)).at(-1);
  return record ? { record, outcome: SendOutcomeEvent.parse(record.payload) } : null;
}

/**
 * The notification's category as it was prepared (and whether it was
 * critical then): a resend honours the entity's preferences for it now.
 */
export function categoryOf(events: readonly StreamRecord[]): CategoryContext {
  const prepared = events.filter((e) => e.type === "PreparedToSendOnAllChannelsEvent" || e.type === "PreparedToSendOnSomeChannelsEvent").at(-1);
  if (!prepared) return {};
  const { category, critical } = PreparedToSendOnChannelsEvent.parse(prepared.payload);
  return { category, ...(critical ? { critical } : {}) };
}

/**
 * Where a channel would go now: the entity's current contact detail, unless
 * it opted out of the channel (or of it for the notification's category,
 * unless that was critical) or has none. Resolved channel by channel, so
 * `delivery: first` or `fallback` does not drop a channel the operator asked for.
 */
export function destinationNow(entity: Entity | null, channel: Channel, category: CategoryContext = {}): { destination: string } | { skipped: string } {
  if (!entity) return { skipped: "the entity no longer exists" };
  const resolution = resolveChannels(entity, [channel], category);
  const used = resolution.channels[0];
  return used ? { destination: used.destination } : { skipped: resolution.skipped[0]?.reason ?? "not usable" };
}

/** The client's request, as the notification's creation event points to it. */
export async function clientRequest(db: Executor, events: readonly StreamRecord[], id: string): Promise<SendNotificationToEntityOp> {
  const created = events.find((e) => e.type === "SendNotificationRequestedEvent");
  if (!created) throw new NotFoundError(`notification ${id} has no SendNotificationRequestedEvent`);
  const pointer = SendNotificationRequestedEvent.parse(created.payload).clientOperation;
  const record = await getByPosition(db, pointer.stream, pointer.position);
  if (!record) throw new NotFoundError(`the client operation of notification ${id} (${pointer.stream} #${pointer.position}) is missing`);
  return SendNotificationToEntityOp.parse(record.payload);
}

/**
 * Executes ResendNotificationOp (for internal_operation_bot), in its
 * handling transaction: reads the entity as it is now, resolves each failed
 * channel's destination (a channel now opted out of, or without a contact
 * detail, is skipped with the reason), and writes the ResendRequestedEvent,
 * a NotificationSaga awaiting the new operations, and the new operations
 * themselves, all caused by the request.
 *
 * The new saga (policy `all`) also counts the other channels' operations
 * with the outcome they already had, so its outcome speaks for the whole
 * notification: Slack failed and email delivered, Slack resent and
 * delivered, is SentOnAllPreparedChannelsEvent; the resent Slack failing
 * again is SentOnSomePreparedChannelsEvent (and alerts, as any failure does).
 */
export async function handleResend({ tx, record, deps, now }: Pick<HandlerContext<NotificationDeps>, "tx" | "record" | "deps" | "now">): Promise<void> {
  const op = ResendNotificationOp.parse(record.payload);
  const id = record.id;
  const cause = { stream: record.stream, position: record.position };
  const events = await findRecords(tx, Streams.notificationEvents, { ids: [id], limit: null });
  // Handled again (an operator re-drove the completed request): prepared once is enough.
  if (events.some((e) => e.type === "ResendRequestedEvent" && e.causedBy?.stream === cause.stream && e.causedBy.position === cause.position)) return;

  const message = await clientRequest(tx, events, id);
  const current = await getEntity(tx, message.entityId);
  const latest = latestSendOutcome(events);
  const outcomeOf = (operationId: string): OperationOutcome | undefined => latest?.outcome.operations.find((o) => o.operationId === operationId);

  // Which resend of this notification this is (the ids stay the same if it is handled again).
  const requests = await findRecords(tx, Streams.notificationInternalOperations, {
    ids: [id],
    types: [NotificationRecordTypes.ResendNotificationOp],
    limit: null,
  });
  const n = requests.filter((r) => r.position <= record.position).length;

  const plans: ChannelPlan[] = [];
  const event: ResendRequestedEvent = {
    requestedBy: op.requestedBy,
    reason: op.reason,
    operations: [],
    skipped: [],
    carriedOver: [],
    entityVersion: current?.position ?? null,
  };
  for (const previous of op.previous) {
    // The situation may have moved on since the operator asked (a re-drive delivered it meanwhile).
    const seen = outcomeOf(previous.operationId);
    const moved = !seen ? "it is no longer the channel's latest operation" : seen.outcome === "succeeded" ? "it was delivered since the resend was asked for" : null;
    const target = moved ? { skipped: moved } : destinationNow(current?.entity ?? null, previous.channel, categoryOf(events));
    if ("skipped" in target) {
      event.skipped.push({ channel: previous.channel, previousOperationId: previous.operationId, reason: target.skipped });
      continue;
    }
    const plan: ChannelPlan = {
      channel: previous.channel,
      operationId: resendOperationId(id, previous.channel, n),
      stream: channelStream(previous.channel),
      destination: target.destination,
    };
    plans.push(plan);
    event.operations.push({
      channel: plan.channel,
      previousOperationId: previous.operationId,
      operationId: plan.operationId,
      previousDestination: previous.destination,
      destination: plan.destination,
    });
  }

  // The other channels keep the outcome they had; the new saga counts them.
  const resent = new Set(plans.map((p) => p.channel));
  const known = plannedOperations(events);
  const carried: ChannelPlan[] = [];
  for (const o of latest?.outcome.operations ?? []) {
    if (resent.has(o.channel)) continue;
    carried.push(known.get(o.operationId) ?? { channel: o.channel, operationId: o.operationId, stream: channelStream(o.channel), destination: "" });
    event.carriedOver.push({ channel: o.channel, operationId: o.operationId, outcome: o.outcome });
  }
  if (plans.length === 0) event.carriedOver = [];

  // Events first, then the saga, then the operations: the notification bot's order.
  await appendOne(tx, Streams.notificationEvents, notificationEvent(record, "ResendRequestedEvent", event));
  if (plans.length === 0) return;
  const saga = NotificationSaga.parse({
    awaiting: [...carried, ...plans],
    policy: "all",
    deadline: sagaDeadline(
      now,
      plans.map((p) => p.channel),
      deps.notification,
    ).toISOString(),
    onAllSent: "SentOnAllPreparedChannelsEvent",
    onSomeSent: "SentOnSomePreparedChannelsEvent",
    onNoneSent: "CouldNotSendOnAnyPreparedChannelEvent",
  });
  // Not while the saga is being evaluated: an outcome written on the saga
  // before this one marks the deadlines it sees handled, and must not take
  // this saga's for one of them.
  await lockSagas(tx, [id]);
  await appendOne(tx, Streams.notificationSagas, { id, type: NotificationRecordTypes.NotificationSaga, payload: saga, causedBy: cause });
  for (const plan of plans) {
    await append(tx, plan.stream, [{ id, ...channelOperation(plan, message, { id, entityId: message.entityId }, deps.notification), causedBy: cause }]);
  }
}
