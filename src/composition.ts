import path from "node:path";
import type { Config } from "./config/config";
import { createEmailBot, type EmailDeps } from "./email/email.bot";
import { messageIdDomain, senderWarnings } from "./email/sender";
import { createEmailTransport } from "./email/transport";
import type { Logger } from "./logging/logger";
import { createInternalOperationBot, createReactionBot } from "./notification/alert.bots";
import { createNotificationBot, type NotificationDeps } from "./notification/notification.bot";
import { createProjectionBot } from "./notification/projection.bot";
import { createSagaBots } from "./notification/saga.bot";
import { createSlackPoster } from "./slack/client";
import { createSlackBot, type SlackDeps } from "./slack/slack.bot";
import type { AnyBot } from "./bots/bot";
import type { ScheduledTasks } from "./bots/worker";
import type { Db } from "./db/database";
import { partitionMaintenance } from "./maintenance/partitions";
import { findStuck, resendNotification, runAction } from "./admin/redrive";
import type { OperatorTools } from "./http/adminActions";
import { createWebhookDeliveryBot, type WebhookDeps } from "./webhooks/delivery.bot";
import { createWebhookDispatchBot } from "./webhooks/dispatch.bot";

/** Everything the bots are given (database access comes from the runner). */
export type BotDeps = EmailDeps & SlackDeps & NotificationDeps & WebhookDeps;

/**
 * Channels from configuration: SMTP and Slack when configured, otherwise
 * local sinks under DATA_DIR/outbox so the default run works end to end.
 */
export async function createBotDeps(config: Config, logger: Logger): Promise<BotDeps & { close(): Promise<void> }> {
  const outbox = path.resolve(config.DATA_DIR, "outbox");
  const transport = createEmailTransport({
    smtpUrl: config.SMTP_URL,
    socketTimeoutMs: config.SMTP_SOCKET_TIMEOUT_MS,
    from: config.EMAIL_FROM,
    sinkDir: path.join(outbox, "email"),
  });
  const poster = createSlackPoster({
    token: config.SLACK_BOT_TOKEN,
    apiUrl: config.SLACK_API_URL,
    sinkFile: path.join(outbox, "slack.jsonl"),
    sinkMissingChannels: config.SLACK_SINK_MISSING_CHANNELS ?? [],
    logger,
  });
  logger.info(`email: ${transport.describe()}`);
  logger.info(`slack: ${poster.describe()}`);
  for (const warning of senderWarnings(config)) logger.warn(warning);
  return {
    email: { transport, from: config.EMAIL_FROM },
    slack: { poster },
    notification: {
      sagaDeadlineMs: config.SAGA_DEADLINE_MS,
      internalTeamEmail: config.INTERNAL_TEAM_EMAIL,
      internalTeamSlackChannel: config.INTERNAL_TEAM_SLACK_CHANNEL,
      snapshotEvery: config.SNAPSHOT_EVERY,
      alertOnNotSent: config.ALERT_ON_NOT_SENT,
      criticalCategories: config.CRITICAL_CATEGORIES,
      ...(config.DELAYED_ALERT_AFTER_MS === undefined ? {} : { delayedAlertAfterMs: config.DELAYED_ALERT_AFTER_MS }),
      retrySchedules: { email: config.EMAIL_RETRY_SCHEDULE, slack: config.SLACK_RETRY_SCHEDULE },
      messageIdDomain: messageIdDomain(config),
    },
    webhooks: {
      timeoutMs: config.WEBHOOK_TIMEOUT_MS,
      allowPrivateAddresses: config.WEBHOOK_ALLOW_PRIVATE_ADDRESSES,
      disableAfter: config.WEBHOOK_DISABLE_AFTER,
    },
    async close() {
      await transport.close?.();
    },
  };
}

/** Every bot tidings runs: one graphile-worker task per (stream, concern), and the projection's catch-up loop. */
export function allBots(): AnyBot<BotDeps>[] {
  return [
    createNotificationBot(),
    ...createSagaBots(),
    createReactionBot(),
    createInternalOperationBot(),
    createProjectionBot(),
    createEmailBot(),
    createSlackBot(),
    createWebhookDispatchBot(),
    createWebhookDeliveryBot(),
  ] as AnyBot<BotDeps>[];
}

/** Maintenance the workers run on graphile-worker's cron: partitions of the streams created ahead (docs/retention.md). */
export function scheduledTasks(db: Db, logger: Logger): ScheduledTasks {
  return partitionMaintenance(db, logger);
}

/**
 * The operators' repairs the HTTP API offers (/v1/admin/actions, /v1/admin/resend,
 * /v1/admin/failures): the same library `npm run redrive` calls. src/admin sits
 * beside src/http, so they meet here and are handed to createApp.
 */
export const operatorTools: OperatorTools = { findStuck, runAction, resendNotification };
