import { HANDLING_STATUSES } from "../../src/streams/interfaces";
import { HANDLING_ACTIONS, isAvailable, nextStatus, requiresReason } from "../../src/streams/transitions";

describe("handling state machine", () => {
  it("claims any Available* status and nothing else", () => {
    const claimable = HANDLING_STATUSES.filter((s) => nextStatus(s, "claim") === "Running");
    expect(claimable.sort()).toEqual(
      ["AvailableAfterCompletion", "AvailableAfterExternalCancellation", "AvailableAfterFailure", "AvailableAfterSelfCancellation", "AvailableByDefault"].sort(),
    );
    expect(claimable.every(isAvailable)).toBe(true);
  });

  it.each([
    ["complete", "Running", "Completed"],
    ["fail", "Running", "Failed"],
    ["self_cancel", "Running", "AvailableAfterSelfCancellation"],
    ["cancel", "Running", "AvailableAfterExternalCancellation"],
    ["reset_failed", "Failed", "AvailableAfterFailure"],
    ["archive_failure", "Failed", "ArchivedAfterFailure"],
    ["reset_completed", "Completed", "AvailableAfterCompletion"],
  ] as const)("%s leads from %s to %s and from nowhere else", (action, from, to) => {
    expect(nextStatus(from, action)).toBe(to);
    for (const other of HANDLING_STATUSES.filter((s) => s !== from)) {
      expect(nextStatus(other, action)).toBeNull();
    }
  });

  it("disables a record from any record status, once", () => {
    expect(nextStatus("Running", "disable_for_record")).toBe("DisabledForRecord");
    expect(nextStatus("Failed", "disable_for_record")).toBe("DisabledForRecord");
    expect(nextStatus("DisabledForRecord", "disable_for_record")).toBeNull();
    for (const action of HANDLING_ACTIONS) expect(nextStatus("DisabledForRecord", action)).toBeNull();
  });

  it("requires a reason for every change but complete", () => {
    expect(HANDLING_ACTIONS.filter((a) => !requiresReason(a))).toEqual(["complete"]);
  });
});
