import { transactionalConsumer, type HandlerOutcome, type TransactionalBot } from "../bots/bot";
import type { Tx } from "../db/database";
import { AppendBuffer, append } from "../streams/append";
import { handleWithoutJobs } from "../streams/handling";
import type { StreamRecord } from "../streams/interfaces";
import { allChannels } from "./channels";
import { readOperationOutcomes } from "./outcomes";
import { Streams } from "./streams";
import { getLatestByIds, getLatestByIdsIn } from "../streams/read";
import { NotificationDelayWatch, NotificationRecordTypes, NotificationSaga, SendOutcomeEvent, type FallbackStep, type OperationOutcome } from "./notification.schemas";
import type { NotificationDeps } from "./notification.bot";
import { notificationEvent, sagaDeadline } from "./notification.bot";
import { decideSaga, type SagaDecision } from "./saga";
import { lockSagas } from "./locks";

const OUTCOME_TYPES = ["SentOnAllPreparedChannelsEvent", "SentOnSomePreparedChannelsEvent", "CouldNotSendOnAnyPreparedChannelEvent"];

type Evaluation = SagaDecision & { saga: NotificationSaga };

/** The saga's concern and actor (migrations/0002_notification.sql). */
const SAGA_CONCERN = "saga_bot";

/**
 * Evaluate the sagas of these notifications and write the outcome event of
 * each whose awaited operations all have an outcome (or whose deadline
 * passed). Runs for channel outcomes (a batch of them at once: the same six
 * queries for any number of notifications) and for a saga's own deadline.
 * Per-notification locks, taken in id order, make concurrent evaluations of
 * one notification take turns, so one outcome is written per decision. A
 * later decision that differs (an operator re-drove a failed operation and it
 * succeeded) is written as a new outcome event; an unchanged one is not
 * written again. Ids without a saga (an internal alert's operations) are
 * left out.
 */
async function evaluateSagas(tx: Tx, causes: ReadonlyMap<string, StreamRecord>, now: Date, settings: NotificationDeps["notification"]): Promise<Map<string, Evaluation>> {
  const ids = [...causes.keys()].sort();
  await lockSagas(tx, ids);
  // Two round trips: the saga and the last outcome together, then the operations' outcomes.
  const [sagas, previous] = (await getLatestByIdsIn(tx, ids, [
    { stream: Streams.notificationSagas, types: [NotificationRecordTypes.NotificationSaga] },
    { stream: Streams.notificationEvents, types: OUTCOME_TYPES },
  ])) as [Map<string, StreamRecord>, Map<string, StreamRecord>];
  const observed = await readOperationOutcomes(tx, ids);
  const evaluations = new Map<string, Evaluation>();
  const out = new AppendBuffer();
  for (const id of ids) {
    const sagaRecord = sagas.get(id);
    if (!sagaRecord) continue;
    const saga = NotificationSaga.parse(sagaRecord.payload);
    const decision = decideSaga(saga, observed.get(id) ?? [], now);
    if (decision.done && !sameOutcome(previous.get(id), decision)) {
      out.add(Streams.notificationEvents, notificationEvent(causes.get(id)!, decision.eventType, decision.payload));
    }
    if (!decision.done && decision.fallBack) {
      const next = fallBack(out, causes.get(id)!, sagaRecord, saga, decision.fallBack, now, settings);
      evaluations.set(id, { done: false, waitingFor: [decision.fallBack.next.plan.operationId], saga: next });
      continue;
    }
    evaluations.set(id, { ...decision, saga });
  }
  // Events first, then the saga, then the operation: the same order as the notification bot.
  await out.flush(tx);
  await settleDeadlines(
    tx,
    ids.filter((id) => evaluations.get(id)?.done),
  );
  return evaluations;
}

/**
 * A notification with its outcome has no deadline left to enforce: its saga
 * records (and delay watches) are marked handled in the transaction that
 * writes the outcome, and their deadline jobs leave the queue. Else each
 * would wait in graphile-worker's table until the deadline (about 31 hours
 * for email) to run once for nothing (migrations/0016_unqueue_handling.sql).
 */
async function settleDeadlines(tx: Tx, ids: readonly string[]): Promise<void> {
  await handleWithoutJobs(tx, { stream: Streams.notificationSagas, concern: SAGA_CONCERN }, ids, {
    actor: SAGA_CONCERN,
    reason: "the notification has its outcome: no deadline left to enforce",
  });
}

/**
 * `delivery: fallback`: the channel tried failed for good, so record that and
 * send on the next one: the event, the saga awaiting the next operation
 * (with its own deadline), and the operation prepared when the notification
 * was, all in this transaction.
 */
function fallBack(
  out: AppendBuffer,
  cause: StreamRecord,
  sagaRecord: StreamRecord,
  saga: NotificationSaga,
  step: { failed: OperationOutcome; next: FallbackStep; rest: FallbackStep[] },
  now: Date,
  settings: NotificationDeps["notification"],
): NotificationSaga {
  const id = sagaRecord.id;
  out.add(Streams.notificationEvents, notificationEvent(cause, "FellBackToNextChannelEvent", { failed: step.failed, next: step.next.plan }));
  const next = NotificationSaga.parse({
    ...saga,
    awaiting: [step.next.plan],
    tried: [...saga.tried, ...saga.awaiting],
    fallbacks: step.rest,
    deadline: sagaDeadline(now, [step.next.plan.channel], settings).toISOString(),
  });
  const causedBy = { stream: cause.stream, position: cause.position };
  out.add(Streams.notificationSagas, { id, type: NotificationRecordTypes.NotificationSaga, payload: next, causedBy });
  out.add(step.next.plan.stream, { id, type: step.next.operation.type, payload: step.next.operation.payload, causedBy });
  return next;
}

function sameOutcome(previous: StreamRecord | undefined, decision: Extract<SagaDecision, { done: true }>): boolean {
  if (!previous) return false;
  if (previous.type !== decision.eventType) return false;
  const before = SendOutcomeEvent.parse(previous.payload);
  const key = (o: { operationId: string; outcome: string }) => `${o.operationId}=${o.outcome}`;
  return before.operations.map(key).sort().join() === decision.payload.operations.map(key).sort().join();
}

/**
 * The saga record itself. Its job is queued to run at the saga's deadline
 * (consumer run_at_field, migrations/0002_notification.sql); if it runs early all the same (a
 * re-drive), it waits (self-cancel) until the deadline.
 */
export function createSagaDeadlineBot(): TransactionalBot<NotificationDeps> {
  return {
    ...transactionalConsumer(Streams.notificationSagas, SAGA_CONCERN),
    schemas: { [NotificationRecordTypes.NotificationSaga]: NotificationSaga, [NotificationRecordTypes.NotificationDelayWatch]: NotificationDelayWatch },
    async handle({ tx, record, now, deps }): Promise<HandlerOutcome> {
      if (record.type === NotificationRecordTypes.NotificationDelayWatch) return watchForDelay(tx, record, now, deps.notification);
      const result = (await evaluateSagas(tx, new Map([[record.id, record]]), now, deps.notification)).get(record.id);
      if (!result || result.done) return;
      const untilDeadline = Date.parse(result.saga.deadline) - now.getTime();
      return {
        retryAfterMs: Math.max(untilDeadline + 50, 50),
        reason: `waiting for ${result.waitingFor.join(", ")} until ${result.saga.deadline}`,
      };
    },
  };
}

/**
 * A delay watch came due: if the notification has no outcome yet, record
 * NotificationDelayedEvent (the reaction bot alerts the team about it). A
 * watch that runs early all the same (a re-drive) waits until it is due.
 */
async function watchForDelay(tx: Tx, record: StreamRecord, now: Date, settings: NotificationDeps["notification"]): Promise<HandlerOutcome> {
  const watch = NotificationDelayWatch.parse(record.payload);
  const dueInMs = Date.parse(watch.deadline) - now.getTime();
  if (dueInMs > 0) return { retryAfterMs: dueInMs + 50, reason: `delay watch due at ${watch.deadline}` };
  const evaluation = (await evaluateSagas(tx, new Map([[record.id, record]]), now, settings)).get(record.id);
  if (!evaluation || evaluation.done) return;
  const [outcome] = (await getLatestByIds(tx, Streams.notificationEvents, [record.id], { types: OUTCOME_TYPES })).values();
  if (outcome) return;
  await append(tx, Streams.notificationEvents, [notificationEvent(record, "NotificationDelayedEvent", { delayedForMs: watch.afterMs, waitingFor: evaluation.waitingFor })]);
}

/** A channel outcome event: re-evaluate the saga that awaits it. */
function createSagaOutcomeBot(channel: (typeof allChannels)[number]): TransactionalBot<NotificationDeps> {
  return {
    // Outcomes of one notification arriving together need one evaluation,
    // and a batch of notifications is evaluated set-based.
    ...transactionalConsumer(channel.streams.events, "saga_bot", { maxSize: 64, coalesceById: true }),
    // A send's success is evaluated in the transaction that records it (one
    // hop fewer; docs/workflow.md). Failures, rarer, come by job.
    followsInline: { recordTypes: [channel.outcomeTypes.succeeded] },
    async handle({ tx, record, now, deps }) {
      await evaluateSagas(tx, new Map([[record.id, record]]), now, deps.notification);
    },
    async handleBatch({ tx, records, now, deps }) {
      await evaluateSagas(tx, new Map(records.map((r) => [r.id, r])), now, deps.notification);
    },
  };
}

export function createSagaBots(): TransactionalBot<NotificationDeps>[] {
  return [createSagaDeadlineBot(), ...allChannels.map((channel) => createSagaOutcomeBot(channel))];
}
