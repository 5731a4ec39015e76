import { sleep } from "./stats";

/**
 * How tidings and the minimal outbox are offered work, written once so both
 * are measured the same way.
 */

/**
 * Sustained throughput: keep `backlog` items waiting (enqueued `batch` per
 * call of `enqueue`), so the workers never starve, and count `done()` over
 * `seconds` after a warm-up. `during` is read at the window's start and end
 * (e.g. the database's commit count) and its difference returned.
 */
export async function keepBacklog(options: {
  seconds: number;
  warmupSeconds: number;
  backlog: number;
  batch: number;
  enqueue: (n: number) => Promise<unknown>;
  done: () => Promise<number>;
  during?: () => Promise<number>;
}): Promise<{ perSec: number; done: number; duringDelta: number }> {
  let enqueued = 0;
  const base = await options.done();
  let done = base;
  let stop = false;
  const enqueuer = (async () => {
    while (!stop) {
      if (enqueued - (done - base) < options.backlog) {
        await options.enqueue(options.batch);
        enqueued += options.batch;
      } else await sleep(10);
    }
  })();
  const poller = (async () => {
    while (!stop) {
      done = await options.done();
      await sleep(100);
    }
  })();
  await sleep(options.warmupSeconds * 1000);
  const c0 = await options.done();
  const k0 = (await options.during?.()) ?? 0;
  const t0 = performance.now();
  await sleep(options.seconds * 1000);
  const c1 = await options.done();
  const k1 = (await options.during?.()) ?? 0;
  const t1 = performance.now();
  stop = true;
  await Promise.all([enqueuer, poller]);
  return { perSec: ((c1 - c0) * 1000) / (t1 - t0), done: c1 - c0, duringDelta: k1 - k0 };
}

/** Open loop: call `enqueueOne` at `ratePerSec` for `seconds` (in ticks of 20 ms), whatever the system's answers; wait for every call. */
export async function offerAtRate(ratePerSec: number, seconds: number, enqueueOne: () => Promise<unknown>): Promise<void> {
  const tickMs = 20;
  const perTick = (ratePerSec * tickMs) / 1000;
  let owed = 0;
  const pending: Promise<unknown>[] = [];
  const began = performance.now();
  while (performance.now() - began < seconds * 1000) {
    owed += perTick;
    while (owed >= 1) {
      pending.push(enqueueOne());
      owed -= 1;
    }
    await sleep(tickMs);
  }
  await Promise.all(pending);
}
