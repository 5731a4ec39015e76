import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { allBots, createBotDeps, type BotDeps } from "../../src/composition";
import type { TidingsWorker } from "../../src/bots/worker";
import { loadConfig } from "../../src/config/config";
import { SendEmailOp } from "../../src/email/email.schemas";
import { putEntity } from "../../src/entities/entity.repository";
import { createLogger } from "../../src/logging/logger";
import { enqueueNotification } from "../../src/notification/enqueue";
import { Streams } from "../../src/notification/streams";
import { findRecords } from "../../src/streams/read";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { startSlackStandIn, type SlackStandIn } from "../helpers/slackStandIn";
import { MAX_LINE_OCTETS, startStrictSmtpServer, type StrictSmtpServer } from "../helpers/strictSmtpServer";
import { startTestWorker } from "../helpers/worker";

/**
 * From configuration to the wire: the bots built by createBotDeps from
 * EMAIL_FROM send emails whose Message-IDs end in the sender's domain (the
 * same id stored in the operation, so a resend carries it), and both the
 * notification and the alert about its failure pass an SMTP server that
 * refuses any line over 998 octets, with the longest subject the API takes.
 */

let t: TestDatabase;
let smtp: StrictSmtpServer;
let slack: SlackStandIn;
let dataDir: string;
let deps: BotDeps & { close(): Promise<void> };
let worker: TidingsWorker;
const logLines: string[] = [];

function capturingLogger() {
  return createLogger(
    "info",
    "test",
    new Writable({
      write(chunk, _encoding, done) {
        logLines.push(String(chunk));
        done();
      },
    }),
  );
}

beforeAll(async () => {
  t = await createTestDatabase();
  smtp = await startStrictSmtpServer();
  slack = await startSlackStandIn({ knownChannels: ["#known"] });
  dataDir = await mkdtemp(path.join(os.tmpdir(), "tidings-sender-"));
  const config = loadConfig({
    SMTP_URL: smtp.url,
    EMAIL_FROM: "Acme Notifications <notify@Mail.Acme.io>",
    INTERNAL_TEAM_EMAIL: "oncall@acme.io",
    SLACK_BOT_TOKEN: slack.token,
    SLACK_API_URL: slack.apiUrl,
    DATA_DIR: dataDir,
  });
  deps = await createBotDeps(config, capturingLogger());
  worker = await startTestWorker(t, allBots(), deps, { maxAttempts: 1 });
});
afterAll(async () => {
  await worker?.stop();
  await deps?.close();
  await slack?.close();
  await smtp?.close();
  await t?.close();
  await rm(dataDir, { recursive: true, force: true });
});

async function storedMessageIds(trackingId: string): Promise<Map<string, string>> {
  const ops = await findRecords(t.adminDb, Streams.emailOperations, { ids: [trackingId] });
  return new Map(ops.map((r) => SendEmailOp.parse(r.payload)).map((op) => [op.to[0]!, op.messageId]));
}

it("a sender at a real domain: no start-up warning", () => {
  expect(logLines.filter((l) => JSON.parse(l).level >= 40)).toEqual([]);
});

it("a notification with a 998-character unbroken subject whose Slack channel is gone: its email and the alert both pass a strict server, Message-IDs in the sender's domain", async () => {
  const subject = "R".repeat(998);
  await putEntity(
    t.db,
    "ada",
    { kind: "user", name: "Ada", email: "ada@acme.io", slack: "#gone", preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all" } },
    "test",
  );
  const { trackingId } = await enqueueNotification(t.db, { entityId: "ada", subject, text: "Hello from tidings." });

  const toAda = await waitFor(async () => smtp.messages.find((m) => m.to.includes("ada@acme.io")), { timeoutMs: 20_000, what: "the email to ada" });
  const alert = await waitFor(async () => smtp.messages.find((m) => m.to.includes("oncall@acme.io")), { timeoutMs: 20_000, what: "the alert email" });
  expect(smtp.refusals.map((r) => r.reason)).toEqual([]);
  for (const message of [toAda, alert]) expect(message.longestLine).toBeLessThanOrEqual(MAX_LINE_OCTETS);

  expect(toAda.subject).toBe(subject);
  expect(toAda.from).toBe('"Acme Notifications" <notify@mail.acme.io>');
  expect(toAda.messageId).toBe(`<${trackingId}.email@mail.acme.io>`);
  expect(alert.subject).toMatch(new RegExp(`^\\[tidings\\] notification ${trackingId} failed`));
  expect(alert.text).toContain(`Subject: ${subject}`);
  expect(alert.messageId).toMatch(new RegExp(`^<${trackingId}\\.alert-\\d+\\.email@mail\\.acme\\.io>$`));

  // The ids on the wire are the ones stored with the operations when they were prepared: a resend uses the same.
  const stored = await storedMessageIds(trackingId);
  expect(stored.get("ada@acme.io")).toBe(toAda.messageId);
  expect(stored.get("oncall@acme.io")).toBe(alert.messageId);
});

it("with a real SMTP_URL and the default sender, start-up warns naming EMAIL_FROM (and the default alert address)", async () => {
  const before = logLines.length;
  const other = await createBotDeps(loadConfig({ SMTP_URL: smtp.url, DATA_DIR: dataDir }), capturingLogger());
  await other.close();
  const warnings = logLines
    .slice(before)
    .map((l) => JSON.parse(l) as { level: number; msg: string })
    .filter((l) => l.level === 40);
  expect(warnings.map((w) => w.msg)).toEqual([
    expect.stringMatching(/^EMAIL_FROM is "tidings <tidings@localhost>": .*set EMAIL_FROM to an address at your own domain$/),
    expect.stringMatching(/^INTERNAL_TEAM_EMAIL is "internal-team@tidings.invalid": /),
  ]);
  expect(other.notification.messageIdDomain).toBe("localhost");
});
