import type { Channel } from "../entities/entity.schemas";
import type { ChannelPlan, NotificationSaga, OperationOutcome, SendOutcomeEvent } from "./notification.schemas";

/** An outcome event seen on a channel's event stream. */
export interface ObservedOutcome {
  operationId: string;
  /** The attempt that produced it; an operator's re-drive makes a later attempt. */
  attempt: number;
  outcome: "succeeded" | "failed";
  error: string | null;
  source: { stream: string; position: number };
}

export type SagaDecision =
  | { done: false; waitingFor: string[] }
  | {
      done: true;
      eventType: NotificationSaga["onAllSent"] | NotificationSaga["onSomeSent"] | NotificationSaga["onNoneSent"];
      payload: SendOutcomeEvent;
    };

/**
 * The saga's rules (the original system's):
 * - an operation's outcome comes from its latest attempt that has one (a
 *   re-driven operation's new attempt supersedes the old outcome); within
 *   that attempt a failure event wins over a success;
 * - a channel counts as sent only if all its operations succeeded;
 * - all channels sent / some / none decides the event;
 * - past the deadline, operations without an outcome count as failed, "timed out".
 */
export function decideSaga(saga: NotificationSaga, observed: readonly ObservedOutcome[], now: Date): SagaDecision {
  const pastDeadline = now.getTime() >= Date.parse(saga.deadline);
  const operations: OperationOutcome[] = [];
  const waitingFor: string[] = [];
  let timedOut = false;
  for (const plan of saga.awaiting) {
    const all = observed.filter((o) => o.operationId === plan.operationId);
    const latest = Math.max(...all.map((o) => o.attempt));
    const mine = all.filter((o) => o.attempt === latest);
    const failure = mine.find((o) => o.outcome === "failed");
    const success = mine.find((o) => o.outcome === "succeeded");
    const chosen = failure ?? success;
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

  const channels = [...new Set(saga.awaiting.map((p: ChannelPlan) => p.channel))];
  const sent: Channel[] = channels.filter((c) => operations.filter((o) => o.channel === c).every((o) => o.outcome === "succeeded"));
  const failed: Channel[] = channels.filter((c) => !sent.includes(c));
  const eventType = failed.length === 0 ? saga.onAllSent : sent.length === 0 ? saga.onNoneSent : saga.onSomeSent;
  return { done: true, eventType, payload: { sent, failed, operations, timedOut } };
}
