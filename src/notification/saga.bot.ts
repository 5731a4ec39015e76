import { sql } from "kysely";
import type { HandlerOutcome, TransactionalBot } from "../bots/bot";
import type { Tx } from "../db/database";
import { EmailRecordTypes, FailedToSendEmailEvent, SucceededInSendingEmailEvent } from "../email/email.schemas";
import { FailedToSendSlackMessageEvent, SlackRecordTypes, SucceededInSendingSlackMessageEvent } from "../slack/slack.schemas";
import { appendOne } from "../streams/append";
import type { StreamRecord } from "../streams/interfaces";
import { Streams } from "../streams/names";
import { findRecords, getLatestById } from "../streams/read";
import { NotificationRecordTypes, NotificationSaga, SendOutcomeEvent } from "./notification.schemas";
import type { NotificationDeps } from "./notification.bot";
import { notificationEvent } from "./notification.bot";
import { decideSaga, type ObservedOutcome, type SagaDecision } from "./saga";

const OUTCOME_TYPES = [
  "SentOnAllPreparedChannelsEvent",
  "SentOnSomePreparedChannelsEvent",
  "CouldNotSendOnAnyPreparedChannelEvent",
];

async function observedOutcomes(tx: Tx, id: string): Promise<ObservedOutcome[]> {
  const [email, slack] = await Promise.all([
    findRecords(tx, Streams.emailEvents, {
      ids: [id],
      types: [EmailRecordTypes.SucceededInSendingEmailEvent, EmailRecordTypes.FailedToSendEmailEvent],
    }),
    findRecords(tx, Streams.slackEvents, {
      ids: [id],
      types: [SlackRecordTypes.SucceededInSendingSlackMessageEvent, SlackRecordTypes.FailedToSendSlackMessageEvent],
    }),
  ]);
  return [...email, ...slack].map((r): ObservedOutcome => {
    const source = { stream: r.stream, position: r.position };
    if (r.type === EmailRecordTypes.FailedToSendEmailEvent || r.type === SlackRecordTypes.FailedToSendSlackMessageEvent) {
      const failure = (r.type === EmailRecordTypes.FailedToSendEmailEvent ? FailedToSendEmailEvent : FailedToSendSlackMessageEvent).parse(r.payload);
      return { operationId: failure.operationId, attempt: failure.attempt, outcome: "failed", error: failure.error, source };
    }
    const success = (r.type === EmailRecordTypes.SucceededInSendingEmailEvent ? SucceededInSendingEmailEvent : SucceededInSendingSlackMessageEvent).parse(r.payload);
    return { operationId: success.operationId, attempt: success.attempt, outcome: "succeeded", error: null, source };
  });
}

/**
 * Evaluate the saga of notification `id` and write its outcome event when
 * every awaited operation has an outcome (or the deadline passed). Runs for
 * each channel outcome and for the saga's own deadline; a per-notification
 * lock makes concurrent evaluations take turns, so one outcome is written per
 * decision. A later decision that differs (an operator re-drove a failed
 * operation and it succeeded) is written as a new outcome event; an unchanged
 * one is not written again.
 */
async function evaluateSaga(tx: Tx, id: string, cause: StreamRecord, now: Date): Promise<(SagaDecision & { saga: NotificationSaga }) | null> {
  await sql`select pg_advisory_xact_lock(hashtextextended(${`saga ${id}`}, 0))`.execute(tx);
  const sagaRecord = await getLatestById(tx, Streams.notificationSagas, id, { type: NotificationRecordTypes.NotificationSaga });
  if (!sagaRecord) return null; // not a notification's operation (e.g. an internal alert)
  const saga = NotificationSaga.parse(sagaRecord.payload);
  const previous = await getLatestById(tx, Streams.notificationEvents, id, { types: OUTCOME_TYPES });
  const decision = decideSaga(saga, await observedOutcomes(tx, id), now);
  if (decision.done && !sameOutcome(previous, decision)) {
    await appendOne(tx, Streams.notificationEvents, notificationEvent(cause, decision.eventType, decision.payload));
  }
  return { ...decision, saga };
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
 * (consumer run_at_field, migrations/0008); if it runs early all the same (a
 * re-drive), it waits (self-cancel) until the deadline.
 */
export function createSagaDeadlineBot(): TransactionalBot<NotificationDeps> {
  return {
    kind: "transactional",
    stream: Streams.notificationSagas,
    concern: "saga_bot",
    actor: "saga_bot",
    batch: { maxSize: 64 },
    schemas: { [NotificationRecordTypes.NotificationSaga]: NotificationSaga },
    async handle({ tx, record, now }): Promise<HandlerOutcome> {
      const result = await evaluateSaga(tx, record.id, record, now);
      if (!result || result.done) return;
      const untilDeadline = Date.parse(result.saga.deadline) - now.getTime();
      return {
        retryAfterMs: Math.max(untilDeadline + 50, 50),
        reason: `waiting for ${result.waitingFor.join(", ")} until ${result.saga.deadline}`,
      };
    },
  };
}

/** A channel outcome event: re-evaluate the saga that awaits it. */
function createSagaOutcomeBot(stream: string): TransactionalBot<NotificationDeps> {
  return {
    kind: "transactional",
    stream,
    concern: "saga_bot",
    actor: "saga_bot",
    // Outcomes of one notification arriving together need one evaluation.
    batch: { maxSize: 64, coalesceById: true },
    async handle({ tx, record, now }) {
      await evaluateSaga(tx, record.id, record, now);
    },
  };
}

export function createSagaBots(): TransactionalBot<NotificationDeps>[] {
  return [createSagaDeadlineBot(), createSagaOutcomeBot(Streams.emailEvents), createSagaOutcomeBot(Streams.slackEvents)];
}
