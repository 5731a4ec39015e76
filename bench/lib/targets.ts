/**
 * The targets the issues set (docs/performance.md), judged on one run's
 * figures: each with what was measured and whether it is met. A target whose
 * section did not run is left out.
 */
export interface Verdict {
  target: string;
  measured: string;
  met: boolean;
}

interface Figures {
  endToEnd?: { ratioToChannelsCeiling: number | null };
  againstMinimalOutbox?: { throughputRatio: number };
  latency?: { offeredPerSec: number; p99: number; at10PerSec: { p50: number } };
  storage?: { bytesPerNotification: number };
  scaling?: Record<string, number>;
  http?: { ratio: number; enqueue: { p99: number } };
  audit?: Array<{ rows: number; medianMs: number }>;
}

const fixed = (n: number, digits: number) => n.toFixed(digits);

export function targetVerdicts(figures: Figures): Verdict[] {
  const verdicts: Verdict[] = [];
  const ceilingRatio = figures.endToEnd?.ratioToChannelsCeiling;
  if (ceilingRatio != null) verdicts.push({ target: "end to end ≥ 0.4 of the channels-only ceiling (0.7 the goal)", measured: fixed(ceilingRatio, 4), met: ceilingRatio >= 0.4 });
  const minimal = figures.againstMinimalOutbox?.throughputRatio;
  if (minimal !== undefined) verdicts.push({ target: "end to end ≥ 0.4 of the minimal outbox", measured: fixed(minimal, 4), met: minimal >= 0.4 });
  if (figures.latency) {
    const { p99, offeredPerSec, at10PerSec } = figures.latency;
    verdicts.push({ target: "p99 ≤ 150 ms at half the sustained rate", measured: `${fixed(p99, 1)} ms at ${fixed(offeredPerSec, 1)}/s`, met: p99 <= 150 });
    verdicts.push({ target: "p50 ≤ 50 ms at 10 notifications/s", measured: `${fixed(at10PerSec.p50, 1)} ms`, met: at10PerSec.p50 <= 50 });
  }
  const bytes = figures.storage?.bytesPerNotification;
  if (bytes !== undefined) verdicts.push({ target: "bytes per notification ≤ 6 kB", measured: String(Math.round(bytes)), met: bytes <= 6000 });
  const one = figures.scaling?.["1"];
  const two = figures.scaling?.["2"];
  if (one !== undefined && two !== undefined) verdicts.push({ target: "2 worker processes at least as fast as 1", measured: `×${fixed(two / one, 2)}`, met: two >= one });
  if (figures.http) {
    const { ratio, enqueue } = figures.http;
    verdicts.push({ target: "HTTP enqueue ≥ 0.5 of a no-op route, p99 ≤ 50 ms", measured: `${fixed(ratio, 4)}, p99 ${enqueue.p99} ms`, met: ratio >= 0.5 && enqueue.p99 <= 50 });
  }
  const largest = [...(figures.audit ?? [])].sort((a, b) => b.rows - a.rows)[0];
  if (largest && largest.rows >= 10_000_000) {
    verdicts.push({ target: "audit 'emails to one address' ≤ 5 ms at 10 M email records", measured: `${fixed(largest.medianMs, 2)} ms median`, met: largest.medianMs <= 5 });
  }
  return verdicts;
}
