import type { Channel } from "../entities/entity.schemas";
import type { ChannelPlan, FallbackStep, NotificationSaga, OperationOutcome, SendOutcomeEvent } from "./notification.schemas";

/** An outcome event seen on a channel's event stream. */
export interface ObservedOutcome {
  operationId: string;
  /** The attempt that produced it; an operator's re-drive makes a later attempt. */
  attempt: number;
  outcome: "succeeded" | "failed";
  error: string | null;
  source: { stream: string; position: number };
}

/** A saga as stored, or as a test writes it (the fallback fields default as in the schema). */
export type SagaInput = Omit<NotificationSaga, "policy" | "tried" | "fallbacks"> & Partial<Pick<NotificationSaga, "policy" | "tried" | "fallbacks">>;

export type SagaDecision =
  | { done: false; waitingFor: string[]; fallBack?: undefined }
  /** `fallback` policy: the operation tried failed for good and another channel is left: send on it. */
  | { done: false; waitingFor: []; fallBack: { failed: OperationOutcome; next: FallbackStep; rest: FallbackStep[] } }
  | {
      done: true;
      eventType: NotificationSaga["onAllSent"] | NotificationSaga["onSomeSent"] | NotificationSaga["onNoneSent"];
      payload: SendOutcomeEvent;
    };

/** An operation's outcome, as notification.operation_outcomes decided it (one per operation). */
function outcomeOf(plan: { operationId: string }, observed: readonly ObservedOutcome[]): ObservedOutcome | undefined {
  return observed.find((o) => o.operationId === plan.operationId);
}

/**
 * The saga's rules (the original system's):
 * - an operation's outcome comes from its latest attempt that has one (a
 *   re-driven operation's new attempt supersedes the old outcome); within
 *   that attempt a failure event wins over a success: decided once, in the
 *   database (notification.operation_outcomes), and given here one per
 *   operation;
 * - a channel counts as sent only if all its operations succeeded;
 * - all channels sent / some / none decides the event;
 * - past the deadline, operations without an outcome count as failed, "timed out".
 * With the `fallback` policy (the Naos README's Continue) one operation is
 * awaited at a time: when it fails for good and a channel is left, the saga
 * falls back to the next one; the first that delivers ends it as sent
 * (`deliveredBy`), and if none does, as not sent on any.
 */
export function decideSaga(saga: SagaInput, observed: readonly ObservedOutcome[], now: Date): SagaDecision {
  const pastDeadline = now.getTime() >= Date.parse(saga.deadline);
  const operations: OperationOutcome[] = [];
  const waitingFor: string[] = [];
  let timedOut = false;
  for (const plan of saga.awaiting) {
    const chosen = outcomeOf(plan, observed);
    if (chosen) {
      operations.push({ operationId: plan.operationId, channel: plan.channel, outcome: chosen.outcome, error: chosen.error, source: chosen.source });
    } else if (pastDeadline) {
      timedOut = true;
      operations.push({ operationId: plan.operationId, channel: plan.channel, outcome: "failed", error: "timed out", source: null });
    } else {
      waitingFor.push(plan.operationId);
    }
  }
  if (waitingFor.length > 0) return { done: false, waitingFor };

  if ((saga.policy ?? "all") === "fallback") {
    const fallbacks = saga.fallbacks ?? [];
    const failedNow = operations.find((o) => o.outcome === "failed");
    if (failedNow && fallbacks.length > 0) {
      return { done: false, waitingFor: [], fallBack: { failed: failedNow, next: fallbacks[0]!, rest: fallbacks.slice(1) } };
    }
    const earlier: OperationOutcome[] = (saga.tried ?? []).map((plan) => {
      const seen = outcomeOf(plan, observed);
      return { operationId: plan.operationId, channel: plan.channel, outcome: "failed", error: seen?.error ?? "failed", source: seen?.source ?? null };
    });
    const all = [...earlier, ...operations];
    const delivered = all.find((o) => o.outcome === "succeeded");
    const failed = [...new Set(all.filter((o) => o.outcome === "failed").map((o) => o.channel))].filter((c) => c !== delivered?.channel);
    return {
      done: true,
      eventType: delivered ? saga.onAllSent : saga.onNoneSent,
      payload: { sent: delivered ? [delivered.channel] : [], failed, operations: all, timedOut, ...(delivered ? { deliveredBy: delivered.channel } : {}) },
    };
  }

  const channels = [...new Set(saga.awaiting.map((p: ChannelPlan) => p.channel))];
  const sent: Channel[] = channels.filter((c) => operations.filter((o) => o.channel === c).every((o) => o.outcome === "succeeded"));
  const failed: Channel[] = channels.filter((c) => !sent.includes(c));
  const eventType = failed.length === 0 ? saga.onAllSent : sent.length === 0 ? saga.onNoneSent : saga.onSomeSent;
  return { done: true, eventType, payload: { sent, failed, operations, timedOut } };
}
