import pino from "pino";
import type { AnyBot } from "../../src/bots/bot";
import { startWorker, type TidingsWorker } from "../../src/bots/worker";
import type { TestDatabase } from "./db";

export const testLogger = pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });

/**
 * Run real graphile-worker workers for these bots against a test database.
 * Short poll interval and retry delays so retries happen within a test.
 */
export async function startTestWorker<TDeps>(
  t: TestDatabase,
  bots: readonly AnyBot<TDeps>[],
  deps: TDeps,
  options: {
    maxAttempts?: number;
    retryBaseMs?: number;
    retryMaxMs?: number;
    concurrency?: number;
    leaseMs?: number;
    shutdownGraceMs?: number;
    retrySchedules?: Partial<Record<string, readonly number[] | undefined>>;
  } = {},
): Promise<TidingsWorker> {
  return startWorker({
    pool: t.pool,
    db: t.db,
    bots,
    runtime: {
      db: t.db,
      deps,
      logger: testLogger,
      settings: {
        maxAttempts: options.maxAttempts ?? 3,
        retryBaseMs: options.retryBaseMs ?? 50,
        retryMaxMs: options.retryMaxMs ?? 1_000,
        ...(options.retrySchedules ? { retrySchedules: options.retrySchedules } : {}),
      },
    },
    // The handling sweep runs only when a test calls it (sweepHandling): a
    // timed one could take the sweep's lock from under the test.
    settings: {
      concurrency: options.concurrency ?? 4,
      pollIntervalMs: 100,
      leaseMs: options.leaseMs ?? 30_000,
      catchUpIdleMs: 25,
      sweepMs: 86_400_000,
      ...(options.shutdownGraceMs === undefined ? {} : { shutdownGraceMs: options.shutdownGraceMs }),
    },
    logger: testLogger,
  });
}
