import { readFileSync } from "node:fs";
import { sleep } from "./stats";

/** Busy and total jiffies of every core so far, from /proc/stat (Linux). */
function cpuTimes(): { busy: number; all: number } {
  const fields = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number);
  // user, nice, system, (idle, iowait), irq, softirq, steal
  const busy = fields[0]! + fields[1]! + fields[2]! + fields[5]! + fields[6]! + fields[7]!;
  return { busy, all: fields.reduce((sum, n) => sum + n, 0) };
}

/** The share of all the machine's cores that was busy during `seconds` (every process counts: tidings, PostgreSQL, the rest). */
export async function machineBusy(seconds: number): Promise<number> {
  const before = cpuTimes();
  await sleep(seconds * 1000);
  const after = cpuTimes();
  return (after.busy - before.busy) / Math.max(1, after.all - before.all);
}
