import { targetVerdicts } from "../../bench/lib/targets";

describe("npm run bench's targets", () => {
  it("judges each target on the run's figures, at its boundary", () => {
    const verdicts = targetVerdicts({
      endToEnd: { ratioToChannelsCeiling: 0.4 },
      againstMinimalOutbox: { throughputRatio: 0.399 },
      latency: { offeredPerSec: 100, p99: 150.1, at10PerSec: { p50: 50 } },
      storage: { bytesPerNotification: 6001 },
      scaling: { "1": 200, "2": 200 },
      http: { ratio: 0.6, enqueue: { p99: 51 } },
      audit: [
        { rows: 1_000_000, medianMs: 9 },
        { rows: 10_000_000, medianMs: 4.9 },
      ],
    });
    expect(Object.fromEntries(verdicts.map((v) => [v.target, v.met]))).toEqual({
      "end to end ≥ 0.4 of the channels-only ceiling (0.7 the goal)": true,
      "end to end ≥ 0.4 of the minimal outbox": false,
      "p99 ≤ 150 ms at half the sustained rate": false,
      "p50 ≤ 50 ms at 10 notifications/s": true,
      "bytes per notification ≤ 6 kB": false,
      "2 worker processes at least as fast as 1": true,
      "HTTP enqueue ≥ 0.5 of a no-op route, p99 ≤ 50 ms": false,
      "audit 'emails to one address' ≤ 5 ms at 10 M email records": true,
    });
    expect(verdicts.find((v) => v.target.startsWith("p99"))!.measured).toBe("150.1 ms at 100.0/s");
  });

  it("leaves out the targets whose section did not run, and the audit target below 10 M records", () => {
    expect(targetVerdicts({ audit: [{ rows: 100_000, medianMs: 1 }] })).toEqual([]);
    expect(targetVerdicts({ storage: { bytesPerNotification: 5000 } })).toEqual([{ target: "bytes per notification ≤ 6 kB", measured: "5000", met: true }]);
  });
});
