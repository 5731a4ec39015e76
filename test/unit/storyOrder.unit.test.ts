import { inStoryOrder } from "../../src/http/reads";

type R = { stream: string; position: number; txId: string; recordedAt: Date; causedBy: { stream: string; position: number } | null };
const record = (stream: string, position: number, txId: string, startedMs: number, causedBy: R["causedBy"] = null): R => ({
  stream,
  position,
  txId,
  recordedAt: new Date(1_800_000_000_000 + startedMs),
  causedBy,
});
const refs = (trail: R[]) => inStoryOrder(trail).map((r) => `${r.stream}#${r.position}`);

describe("a notification's story order", () => {
  it("puts transactions in the order they started", () => {
    const trail = [record("notification.client_operations", 1, "10", 0), record("notification.events", 1, "11", 5), record("email.events", 1, "12", 9)];
    expect(refs(trail)).toEqual(["notification.client_operations#1", "notification.events#1", "email.events#1"]);
  });

  it("puts a transaction after the one that caused its records, though it started first (READ COMMITTED reads later commits)", () => {
    // The projection's transaction began at 4 ms, then read the outcome committed by a transaction begun at 6 ms.
    const trail = [
      record("notification.client_operations", 1, "10", 0),
      record("notification.snapshots", 7, "20", 4, { stream: "notification.events", position: 3 }),
      record("notification.events", 3, "21", 6, { stream: "notification.client_operations", position: 1 }),
      record("email.operations", 2, "22", 8),
    ];
    expect(refs(trail)).toEqual(["notification.client_operations#1", "notification.events#3", "notification.snapshots#7", "email.operations#2"]);
  });

  it("within one transaction, a record after its cause", () => {
    const trail = [record("notification.events", 9, "30", 0, { stream: "email.events", position: 4 }), record("email.events", 4, "30", 0)];
    expect(refs(trail)).toEqual(["email.events#4", "notification.events#9"]);
  });
});
