import type { BotDeps } from "../../src/composition";
import { allBots } from "../../src/composition";
import type { TidingsWorker } from "../../src/bots/worker";
import { createEmailTransport } from "../../src/email/transport";
import type { EntityInput } from "../../src/entities/entity.schemas";
import { putEntity } from "../../src/entities/entity.repository";
import { createSlackPoster } from "../../src/slack/client";
import { inTransaction } from "../../src/db/database";
import { clientOperation, parseSendNotification } from "../../src/notification/enqueue";
import { newTrackingId } from "../../src/notification/ids";
import { appendOne } from "../../src/streams/append";
import { Streams } from "../../src/notification/streams";
import { findRecords, getLatestById } from "../../src/streams/read";
import { createTestDatabase, waitFor, type TestDatabase } from "./db";
import { startSlackStandIn, type SlackStandIn, type SlackStandInOptions } from "./slackStandIn";
import { startSmtpServer, type TestSmtpServer } from "./smtpServer";
import { startTestWorker, testLogger } from "./worker";

export const OUTCOME_TYPES = [
  "SentOnAllPreparedChannelsEvent",
  "SentOnSomePreparedChannelsEvent",
  "CouldNotSendOnAnyPreparedChannelEvent",
  "CouldNotGetOrUseAudienceEvent",
  "AudienceOptedOutOfAllChannelsEvent",
  "CouldNotPrepareToSendOnAnyChannelEvent",
];

export interface Tidings {
  t: TestDatabase;
  smtp: TestSmtpServer;
  slack: SlackStandIn;
  deps: BotDeps & { close(): Promise<void> };
  worker: TidingsWorker | null;
  startWorker(): Promise<TidingsWorker>;
  stop(): Promise<void>;
}

/**
 * The whole workflow against real servers on loopback: a test database, a
 * real SMTP server, the Slack Web API stand-in, and every bot running in
 * real graphile-worker workers.
 */
export async function startTidings(
  options: {
    sagaDeadlineMs?: number;
    maxAttempts?: number;
    internalTeamSlackChannel?: string;
    autoStart?: boolean;
    alertOnNotSent?: boolean;
    delayedAlertAfterMs?: number;
    /** Channels' retry schedules (delays before each further attempt), as EMAIL_/SLACK_RETRY_SCHEDULE. */
    retrySchedules?: { email?: number[]; slack?: number[] };
    /** The Slack stand-in's options, e.g. knownChannels (posting anywhere else answers channel_not_found). */
    slack?: SlackStandInOptions;
  } = {},
): Promise<Tidings> {
  const t = await createTestDatabase(30);
  const smtp = await startSmtpServer();
  const slack = await startSlackStandIn(options.slack);
  const transport = createEmailTransport({ smtpUrl: smtp.url, from: "tidings <tidings@example.test>", sinkDir: "/nonexistent", maxConnections: 2 });
  const poster = createSlackPoster({ token: slack.token, apiUrl: slack.apiUrl, sinkFile: "/nonexistent", logger: testLogger });
  const deps: Tidings["deps"] = {
    email: { transport, from: "tidings <tidings@example.test>" },
    slack: { poster },
    notification: {
      sagaDeadlineMs: options.sagaDeadlineMs ?? 60_000,
      internalTeamEmail: "oncall@example.test",
      internalTeamSlackChannel: options.internalTeamSlackChannel,
      alertOnNotSent: options.alertOnNotSent ?? false,
      ...(options.delayedAlertAfterMs === undefined ? {} : { delayedAlertAfterMs: options.delayedAlertAfterMs }),
      ...(options.retrySchedules ? { retrySchedules: options.retrySchedules } : {}),
      snapshotEvery: 3,
      messageIdDomain: "example.test",
    },
    close: async () => transport.close?.(),
  };
  const self: Tidings = {
    t,
    smtp,
    slack,
    deps,
    worker: null,
    async startWorker() {
      self.worker = await startTestWorker(t, allBots(), deps, {
        maxAttempts: options.maxAttempts ?? 3,
        concurrency: 8,
        ...(options.retrySchedules ? { retrySchedules: { email_bot: options.retrySchedules.email, slack_bot: options.retrySchedules.slack } } : {}),
      });
      return self.worker;
    },
    async stop() {
      await self.worker?.stop();
      await deps.close();
      await smtp.close();
      await slack.close();
      await t.close();
    },
  };
  if (options.autoStart !== false) await self.startWorker();
  return self;
}

export const person = (overrides: Partial<EntityInput> = {}): EntityInput => ({
  kind: "user",
  name: "Test Person",
  email: "test@example.com",
  slack: "U0123ABCD",
  preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all" },
  ...overrides,
});

export async function createEntity(t: TestDatabase, id: string, input: EntityInput = person()) {
  return putEntity(t.db, id, input, "test");
}

/** Wait for the notification's outcome event (sent on all/some/none, or a terminal failure). */
export async function waitForOutcome(t: TestDatabase, id: string, timeoutMs = 20_000) {
  return waitFor(() => getLatestById(t.adminDb, Streams.notificationEvents, id, { types: OUTCOME_TYPES }), {
    timeoutMs,
    what: `the outcome of notification ${id}`,
  });
}

export async function eventTypes(t: TestDatabase, stream: string, id: string): Promise<string[]> {
  return (await findRecords(t.adminDb, stream, { ids: [id] })).map((r) => r.type);
}

/**
 * A client operation for an entity that is gone by the time the notification
 * bot handles it: enqueue refuses an unknown entity, so this appends the
 * operation as the client actor directly, as if the entity had been removed
 * between the enqueue and its handling.
 */
export async function enqueueForGoneEntity(t: TestDatabase, entityId: string, subject = "for nobody"): Promise<{ trackingId: string }> {
  const op = parseSendNotification({ entityId, subject, text: "Hello from tidings." });
  const trackingId = newTrackingId();
  await inTransaction(t.db, "client", (tx) => appendOne(tx, Streams.notificationClientOperations, clientOperation(op, trackingId)));
  return { trackingId };
}
