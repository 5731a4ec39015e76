import "dotenv/config";
import type { Server } from "node:http";
import { ConfigError, loadConfig } from "./config/config";
import { openDatabase } from "./db/connect";
import { DatabaseSetupError } from "./db/migrate";
import { takeOverShutdownSignals } from "./db/embedded";
import { startWorker, type TidingsWorker } from "./bots/worker";
import { createApp } from "./http/app";
import { listen } from "./http/server";
import { announce } from "./logging/announce";
import { createLogger } from "./logging/logger";
import { allBots, createBotDeps, operatorTools, scheduledTasks } from "./composition";
import { ensureDevelopmentKey, listApiKeys } from "./auth/apiKeys";
import { createKeyCommand } from "./auth/keyCommand";
import { createMetrics } from "./http/metrics";
import { ExternalError } from "./errors/errors";
import { redactSecrets } from "./logging/redact";

/** `npm start`: migrate, then run the HTTP API and the workers in this process. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig();
  } catch (error) {
    if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exit(2);
    }
    throw error;
  }
  const logger = createLogger(config.LOG_LEVEL);
  // graphile-worker can reject a promise nobody awaits while its connections
  // are being cut (returning its local queue to a database that went away).
  // Everything that matters is in PostgreSQL and recovered by leases, and the
  // worker pool is restarted by its supervisor: log it, do not die of it.
  process.on("unhandledRejection", (reason) => {
    logger.error({ err: reason }, "unhandled rejection (carrying on)");
  });
  const database = await openDatabase(config, logger);
  const metrics = createMetrics({ defaultMetrics: true, databaseRefreshMs: config.METRICS_REFRESH_MS });
  // Aborted at shutdown: long-polls answer at once instead of holding server.close() for their wait.
  const stopRequests = new AbortController();

  let worker: TidingsWorker | null = null;
  let deps: Awaited<ReturnType<typeof createBotDeps>> | null = null;
  if (config.RUN_WORKER) {
    deps = await createBotDeps(config, logger);
    worker = await startWorker({
      pool: database.pool,
      db: database.db,
      bots: allBots(),
      runtime: {
        db: database.db,
        deps,
        logger,
        onHandled: metrics.onHandled,
        settings: {
          maxAttempts: config.BOT_MAX_ATTEMPTS,
          retryBaseMs: config.BOT_RETRY_BASE_MS,
          retryMaxMs: config.BOT_RETRY_MAX_MS,
          retrySchedules: { email_bot: config.EMAIL_RETRY_SCHEDULE, slack_bot: config.SLACK_RETRY_SCHEDULE, webhook_bot: config.WEBHOOK_RETRY_SCHEDULE },
        },
      },
      settings: {
        concurrency: config.WORKER_CONCURRENCY,
        pollIntervalMs: config.WORKER_POLL_INTERVAL_MS,
        leaseMs: config.WORKER_LEASE_MS,
        sweepMs: config.HANDLING_SWEEP_MS,
        shutdownGraceMs: config.WORKER_SHUTDOWN_GRACE_MS,
      },
      logger,
      scheduled: scheduledTasks(database.db, logger),
    });
    logger.info({ concurrency: config.WORKER_CONCURRENCY }, "workers started");
  }

  let server: Server | null = null;
  if (config.RUN_API) {
    const app = createApp({
      pool: database.pool,
      db: database.db,
      logger,
      metrics,
      rateLimit: { limit: config.API_RATE_LIMIT, windowSeconds: config.API_RATE_LIMIT_WINDOW_SECONDS },
      feedWaitLimits: { perKey: config.FEED_MAX_WAITS_PER_KEY, total: config.FEED_MAX_WAITS },
      stopping: stopRequests.signal,
      operatorTools,
      webhookAddresses: { allowPrivateAddresses: config.WEBHOOK_ALLOW_PRIVATE_ADDRESSES },
    });
    try {
      server = await listen(app, config.HOST, config.PORT);
    } catch (error) {
      // Stop what was started (an embedded database included) before the one line that says why.
      worker?.markShuttingDown();
      await worker?.stop();
      await deps?.close();
      await database.close();
      throw error;
    }
    // After listening, so a start that fails does not spend the key's only showing.
    // The zero-setup run gets a key to try the API with; a configured database never does.
    if (!config.DATABASE_URL) {
      const key = await ensureDevelopmentKey(database.db);
      if (key) {
        logger.info({ apiKeyId: key.keyId }, `created a development API key with every scope (no key existed); it is shown only this once: ${key.secret}`);
        announce("Development API key (every scope; shown only this once, use it as Authorization: Bearer <key>):", key.secret);
      }
    }
    if ((await listApiKeys(database.db, { includeRevoked: false })).length === 0) {
      logger.warn(`no active API key exists, so the API refuses every request; create one (its secret is printed once) with: ${createKeyCommand()}`);
    }
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : config.PORT;
    logger.info(`tidings API listening on http://${config.HOST}:${port}`);
  }

  let stopping = false;
  const shutdown = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    worker?.markShuttingDown();
    logger.info({ signal }, "shutting down");
    stopRequests.abort();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    await worker?.stop();
    await deps?.close();
    await database.close();
    logger.info("stopped");
    process.exit(0);
  };
  // Ours, in order: HTTP, workers, channels, then the database (embedded or not).
  if (database.embedded) takeOverShutdownSignals();
  process.on("SIGINT", () => void shutdown("SIGINT"));
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGHUP", () => void shutdown("SIGHUP"));
}

main().catch((error) => {
  // A failure of the outside world (the database unreachable) is one line an
  // operator can act on; anything else keeps its stack. Secrets hidden either way.
  const text = error instanceof ExternalError || error instanceof DatabaseSetupError ? error.message.replace(/\s*[\r\n]+\s*/g, " ") : ((error as Error).stack ?? String(error));
  process.stderr.write(`tidings failed to start: ${redactSecrets(text)}\n`);
  process.exit(1);
});
