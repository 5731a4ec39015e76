import { HANDLING_STATUSES, type HandlingStatus } from "./interfaces";

/**
 * The handling state machine (the original system's). Pure, so the rules
 * can be unit-tested; the same table lives in `tidings.handling_transitions`
 * where a trigger enforces it on every write (a test keeps the two equal).
 */
export const AVAILABLE_STATUSES = [
  "AvailableByDefault",
  "AvailableAfterCompletion",
  "AvailableAfterFailure",
  "AvailableAfterExternalCancellation",
  "AvailableAfterSelfCancellation",
] as const satisfies readonly HandlingStatus[];

/** Settled: nothing more happens to the record unless an operator acts (no attempt follows by itself). */
export const SETTLED_STATUSES: readonly string[] = ["Completed", "Failed", "ArchivedAfterFailure", "DisabledForRecord"] satisfies readonly HandlingStatus[];

export type HandlingAction = "claim" | "handle" | "complete" | "fail" | "self_cancel" | "cancel" | "reset_failed" | "archive_failure" | "reset_completed" | "disable_for_record";

/** The statuses a record can be disabled from (disable_for_record): every one but the two disabled ones. */
const RECORD_STATUSES: readonly HandlingStatus[] = HANDLING_STATUSES.filter((s) => s !== "DisabledForRecord" && s !== "DisabledForStream");

export const TRANSITIONS: Record<HandlingAction, { from: readonly HandlingStatus[]; to: HandlingStatus }> = {
  claim: { from: AVAILABLE_STATUSES, to: "Running" },
  // Claimed and completed in one step, by a transactional bot's batch: its
  // Running state would never be seen by anyone (it commits with the
  // completion or not at all), so one history entry says it.
  handle: { from: AVAILABLE_STATUSES, to: "Completed" },
  complete: { from: ["Running"], to: "Completed" },
  fail: { from: ["Running"], to: "Failed" },
  self_cancel: { from: ["Running"], to: "AvailableAfterSelfCancellation" },
  cancel: { from: ["Running"], to: "AvailableAfterExternalCancellation" },
  reset_failed: { from: ["Failed"], to: "AvailableAfterFailure" },
  archive_failure: { from: ["Failed"], to: "ArchivedAfterFailure" },
  reset_completed: { from: ["Completed"], to: "AvailableAfterCompletion" },
  disable_for_record: { from: RECORD_STATUSES, to: "DisabledForRecord" },
};

export const HANDLING_ACTIONS = Object.keys(TRANSITIONS) as HandlingAction[];

export function isAvailable(status: HandlingStatus): boolean {
  return (AVAILABLE_STATUSES as readonly string[]).includes(status);
}

/** The status `action` leads to from `current`, or null when the machine forbids it. */
export function nextStatus(current: HandlingStatus, action: HandlingAction): HandlingStatus | null {
  const rule = TRANSITIONS[action];
  return rule.from.includes(current) ? rule.to : null;
}

/** Every change but `complete` must say why. */
export function requiresReason(action: HandlingAction): boolean {
  return action !== "complete";
}
