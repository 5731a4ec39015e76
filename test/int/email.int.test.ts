import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { inTransaction } from "../../src/db/database";
import { createEmailBot, type EmailDeps } from "../../src/email/email.bot";
import type { FailedToSendEmailEvent, SendEmailOp, SendEmailRequestedEvent, SucceededInSendingEmailEvent } from "../../src/email/email.schemas";
import { createEmailTransport, type EmailTransportOptions } from "../../src/email/transport";
import { append } from "../../src/streams/append";
import { getHandling, getHistory } from "../../src/streams/handling";
import type { HandlingState } from "../../src/streams/interfaces";
import { Streams } from "../../src/notification/streams";
import { getAllById } from "../../src/streams/read";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { parseMessage, startSmtpServer, type TestSmtpServer } from "../helpers/smtpServer";
import { startTestWorker } from "../helpers/worker";

const FROM = "Tidings <noreply@tidings.test>";
const CONCERN = "email_bot";

let t: TestDatabase;
let server: TestSmtpServer;

beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t.close();
});
beforeEach(async () => {
  server = await startSmtpServer();
});
afterEach(async () => {
  await server.close();
});

/** One SendEmailOp per test, its ids derived from a name so the tests never see each other's records. */
function operation(name: string, overrides: Partial<SendEmailOp> = {}): { trackingId: string; op: SendEmailOp } {
  const trackingId = `n-${name}`;
  return {
    trackingId,
    op: {
      operationId: `${trackingId}:email`,
      notificationId: trackingId,
      purpose: "notification",
      entityId: `entity-${name}`,
      to: [`${name}@example.com`],
      subject: `Subject of ${name}`,
      text: `Text of ${name}`,
      messageId: `<${trackingId}.email@tidings.test>`,
      tags: {},
      ...overrides,
    },
  };
}

/** Append as the notification bot would: it is a declared producer of email.operations. */
async function enqueue(trackingId: string, op: SendEmailOp): Promise<number> {
  const [result] = await inTransaction(t.db, "notification_bot", (tx) => append(tx, Streams.emailOperations, [{ id: trackingId, type: "SendEmailOp", payload: op }]));
  return result!.position;
}

/** Run the email bot with a transport built from these options until `fn` is done. */
async function withEmailBot<T>(
  transport: Omit<EmailTransportOptions, "from" | "sinkDir"> & { sinkDir?: string },
  fn: () => Promise<T>,
  workerOptions: { maxAttempts?: number } = {},
): Promise<T> {
  const emailTransport = createEmailTransport({
    from: FROM,
    sinkDir: transport.sinkDir ?? path.join(os.tmpdir(), "tidings-unused-sink"),
    ...transport,
  });
  const deps: EmailDeps = { email: { transport: emailTransport, from: FROM } };
  const worker = await startTestWorker(t, [createEmailBot()], deps, workerOptions);
  try {
    return await fn();
  } finally {
    await worker.stop();
    await emailTransport.close?.();
  }
}

/** Wait until the record is done with: Completed, or Failed with no retry to follow. */
async function outcome(position: number): Promise<HandlingState> {
  return waitFor(
    async () => {
      const state = await getHandling(t.adminDb, Streams.emailOperations, position, CONCERN);
      return state.status === "Completed" || state.status === "Failed" ? state : null;
    },
    { timeoutMs: 10_000, what: `email operation at position ${position} to be completed or failed` },
  );
}

async function emailEvents(trackingId: string) {
  return getAllById(t.adminDb, Streams.emailEvents, trackingId);
}

function history(position: number) {
  return getHistory(t.adminDb, Streams.emailOperations, position, CONCERN);
}

const crlf = (s: string | null) => s?.replace(/\r\n/g, "\n") ?? null;

describe("email bot over real SMTP", () => {
  it("delivers the message with the operation's Message-ID, unicode and HTML intact, and records Requested then Succeeded", async () => {
    const { trackingId, op } = operation("delivered", {
      to: ["delivered@example.com", "second@example.com"],
      subject: "Ihre Bestellung ist unterwegs — 你好 🚀 (with a subject long enough to be folded over several lines)",
      text: "Grüße aus Zürich 🌍\nLine two, with a lone dot below:\n.\nÇa marche — ✓",
      html: '<p>Grüße aus <b>Zürich</b> 🌍</p><p><a href="https://example.com/?a=1&amp;b=2">Suivre — ✓</a></p>',
    });
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ smtpUrl: server.url }, () => outcome(position));

    expect(state.status).toBe("Completed");
    expect(state.attempts).toBe(1);
    expect(server.messages).toHaveLength(1);
    const received = server.messages[0]!;
    expect(received.messageId).toBe(op.messageId);
    expect(received.from).toBe("noreply@tidings.test");
    expect(received.to).toEqual(op.to);
    expect(received.subject).toBe(op.subject);
    expect(crlf(received.text)).toBe(op.text);
    expect(crlf(received.html)).toBe(op.html);
    expect(received.headers["x-tidings-operation-id"]).toBe(op.operationId);
    expect(received.headers["x-tidings-notification-id"]).toBe(trackingId);

    const events = await emailEvents(trackingId);
    expect(events.map((e) => e.type)).toEqual(["SendEmailRequestedEvent", "SucceededInSendingEmailEvent"]);
    for (const event of events) {
      expect(event.causedBy).toEqual({ stream: Streams.emailOperations, position });
      expect(event.recordedBy).toBe("tidings_email_bot");
    }
    expect(events[0]!.payload).toEqual({
      operationId: op.operationId,
      attempt: 1,
      to: op.to,
      subject: op.subject,
    } satisfies SendEmailRequestedEvent);
    const succeeded = events[1]!.payload as SucceededInSendingEmailEvent;
    expect(succeeded).toMatchObject({
      operationId: op.operationId,
      attempt: 1,
      messageId: op.messageId,
      accepted: op.to,
      rejected: [],
    });
    expect(succeeded.response).toMatch(/^250 /);

    expect((await history(position)).map((h) => [h.action, h.fromStatus, h.toStatus])).toEqual([
      ["claim", "AvailableByDefault", "Running"],
      ["complete", "Running", "Completed"],
    ]);
  });

  it("delivers long lines intact: a 20,000-character line without spaces and a long unicode line, text and HTML", async () => {
    const unbroken = "x".repeat(20_000);
    const unicodeLine = "Grüße—你好🚀 ".repeat(1_500).trimEnd();
    const { trackingId, op } = operation("long-lines", {
      text: `${unbroken}\n${unicodeLine}\nend`,
      html: `<p>${unbroken}</p><p>${unicodeLine} &amp; &lt;tags&gt;</p>`,
    });
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ smtpUrl: server.url }, () => outcome(position));
    expect(state.status).toBe("Completed");
    const received = server.messages[0]!;
    // SMTP lines may not exceed 998 octets: nodemailer encodes the body, and the receiver gets it back whole.
    expect(received.raw.split(/\r\n/).every((line) => Buffer.byteLength(line) <= 998)).toBe(true);
    expect(crlf(received.text)).toBe(op.text);
    expect(crlf(received.html)).toBe(op.html);
  });

  it("fails at once on a 550 reply: one attempt, a permanent failure event, the error kept in the handling state", async () => {
    server.rejectNext(1, "DATA", 550, "5.7.1 Message rejected as spam");
    const { trackingId, op } = operation("rejected-550");
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ smtpUrl: server.url }, async () => {
      const settled = await outcome(position);
      // A permanent failure queues nothing: give a retry the time it would need, and see none.
      await new Promise((r) => setTimeout(r, 400));
      return settled;
    });

    expect(state.status).toBe("Failed");
    expect(state.attempts).toBe(1);
    expect(state.lastError).toContain("550 5.7.1 Message rejected as spam");
    expect(state.lastDetails).toMatchObject({
      attempt: 1,
      transient: false,
      external: { smtpCode: 550, code: "EMESSAGE", classification: "permanent" },
    });
    expect(server.messages).toHaveLength(0);
    expect(server.transactions).toHaveLength(1);

    const events = await emailEvents(trackingId);
    expect(events.map((e) => e.type)).toEqual(["SendEmailRequestedEvent", "FailedToSendEmailEvent"]);
    expect(events[1]!.causedBy).toEqual({ stream: Streams.emailOperations, position });
    expect(events[1]!.payload).toEqual({
      operationId: op.operationId,
      attempt: 1,
      error: expect.stringContaining("550 5.7.1 Message rejected as spam"),
      smtpCode: 550,
      classification: "permanent",
      reason: "permanent",
    } satisfies Record<keyof FailedToSendEmailEvent, unknown>);

    const entries = await history(position);
    expect(entries.map((h) => [h.action, h.toStatus])).toEqual([
      ["claim", "Running"],
      ["fail", "Failed"],
    ]);
    expect(entries[1]!.reason).toMatch(/^permanent failure on attempt 1: .*550/);
  });

  it("retries 451 replies and delivers on the third attempt, each retried attempt an AttemptFailed event, no failure event", async () => {
    server.rejectNext(2, "DATA", 451, "4.3.0 Temporary local problem, try again");
    const { trackingId, op } = operation("transient-451");
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ smtpUrl: server.url }, () => outcome(position), { maxAttempts: 3 });

    expect(state.status).toBe("Completed");
    expect(state.attempts).toBe(3);
    // Every attempt carried the same Message-ID: a receiver can drop duplicates.
    expect(server.transactions.map((x) => [x.outcome, x.code, x.messageId])).toEqual([
      ["rejected", 451, op.messageId],
      ["rejected", 451, op.messageId],
      ["accepted", 250, op.messageId],
    ]);
    expect(server.messages).toHaveLength(1);

    const entries = await history(position);
    expect(entries.filter((h) => h.action === "claim")).toHaveLength(3);
    expect(entries.map((h) => [h.action, h.toStatus])).toEqual([
      ["claim", "Running"],
      ["fail", "Failed"],
      ["reset_failed", "AvailableAfterFailure"],
      ["claim", "Running"],
      ["fail", "Failed"],
      ["reset_failed", "AvailableAfterFailure"],
      ["claim", "Running"],
      ["complete", "Completed"],
    ]);
    expect(entries[1]!.reason).toMatch(/^attempt 1 failed: .*451/);
    expect(entries[1]!.details).toMatchObject({ transient: true, external: { smtpCode: 451, classification: "transient" } });

    const events = await emailEvents(trackingId);
    expect(events.map((e) => [e.type, (e.payload as { attempt: number }).attempt])).toEqual([
      ["SendEmailRequestedEvent", 1],
      ["SendEmailAttemptFailedEvent", 1],
      ["SendEmailRequestedEvent", 2],
      ["SendEmailAttemptFailedEvent", 2],
      ["SendEmailRequestedEvent", 3],
      ["SucceededInSendingEmailEvent", 3],
    ]);
  });

  it("retries a connection dropped in the middle of DATA", async () => {
    server.dropNext(1, "DATA");
    const { trackingId, op } = operation("dropped");
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ smtpUrl: server.url }, () => outcome(position));

    expect(state.status).toBe("Completed");
    expect(state.attempts).toBe(2);
    expect(server.transactions.map((x) => x.outcome)).toEqual(["dropped", "accepted"]);
    const entries = await history(position);
    expect(entries[1]!.details).toMatchObject({ transient: true, external: { smtpCode: null, code: "ECONNECTION" } });
    expect((await emailEvents(trackingId)).map((e) => e.type)).toEqual([
      "SendEmailRequestedEvent",
      "SendEmailAttemptFailedEvent",
      "SendEmailRequestedEvent",
      "SucceededInSendingEmailEvent",
    ]);
  });

  it("gives up after maxAttempts when the server refuses connections, with 'attempts exhausted'", async () => {
    const url = server.url;
    await server.close(); // nothing listens on the port any more: ECONNREFUSED
    const { trackingId, op } = operation("refused");
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ smtpUrl: url }, () => outcome(position), { maxAttempts: 3 });

    expect(state.status).toBe("Failed");
    expect(state.attempts).toBe(3);
    expect(state.lastError).toContain("ECONNREFUSED");
    expect(state.lastDetails).toMatchObject({
      attempt: 3,
      transient: true,
      external: { smtpCode: null, code: "ESOCKET", originalCode: "ECONNREFUSED" },
    });
    const entries = await history(position);
    expect(entries.filter((h) => h.action === "claim")).toHaveLength(3);
    expect(entries.at(-1)!.reason).toMatch(/^gave up after attempt 3: /);

    const events = await emailEvents(trackingId);
    // Each retried failure is an AttemptFailed event; the final one a FailedToSend outcome.
    expect(events.map((e) => e.type)).toEqual([
      "SendEmailRequestedEvent",
      "SendEmailAttemptFailedEvent",
      "SendEmailRequestedEvent",
      "SendEmailAttemptFailedEvent",
      "SendEmailRequestedEvent",
      "FailedToSendEmailEvent",
    ]);
    expect(events[5]!.payload).toEqual({
      operationId: op.operationId,
      attempt: 3,
      error: expect.stringContaining("ECONNREFUSED"),
      smtpCode: null,
      classification: "transient",
      reason: "attempts exhausted",
    });
  });

  it("fails permanently when every recipient is refused with 550", async () => {
    server.rejectNext(1, "RCPT", 550, "5.1.1 Recipient address rejected: no such user");
    const { trackingId, op } = operation("no-such-user");
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ smtpUrl: server.url }, () => outcome(position));

    expect(state.status).toBe("Failed");
    expect(state.attempts).toBe(1);
    const failed = (await emailEvents(trackingId)).at(-1)!;
    expect(failed.type).toBe("FailedToSendEmailEvent");
    expect(failed.payload).toMatchObject({ smtpCode: 550, classification: "permanent", reason: "permanent" });
    expect(state.lastDetails).toMatchObject({ external: { code: "EENVELOPE", rejected: op.to } });
  });

  it("succeeds for the recipients the server took, listing the refused one", async () => {
    server.rejectRecipient("ghost@example.com", 550, "5.1.1 No such user");
    const { trackingId, op } = operation("partial", { to: ["partial@example.com", "ghost@example.com"] });
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ smtpUrl: server.url }, () => outcome(position));

    expect(state.status).toBe("Completed");
    const succeeded = (await emailEvents(trackingId)).at(-1)!;
    expect(succeeded.type).toBe("SucceededInSendingEmailEvent");
    expect(succeeded.payload).toMatchObject({ accepted: ["partial@example.com"], rejected: ["ghost@example.com"] });
    expect(server.messages[0]!.to).toEqual(["partial@example.com"]);
  });

  it("fails permanently on an authentication failure (535)", async () => {
    const secured = await startSmtpServer({ auth: { user: "mailer", pass: "right" } });
    try {
      const { trackingId, op } = operation("bad-auth");
      const position = await enqueue(trackingId, op);
      const smtpUrl = secured.url.replace("smtp://", "smtp://mailer:wrong@");
      const state = await withEmailBot({ smtpUrl }, () => outcome(position));

      expect(state.status).toBe("Failed");
      expect(state.attempts).toBe(1);
      expect(state.lastDetails).toMatchObject({ external: { smtpCode: 535, code: "EAUTH" } });
      expect((await emailEvents(trackingId)).at(-1)!.payload).toMatchObject({
        smtpCode: 535,
        classification: "permanent",
        reason: "permanent",
      });
      expect(secured.messages).toHaveLength(0);
    } finally {
      await secured.close();
    }
  });
});

describe("email bot with the local sink (no SMTP URL)", () => {
  let sinkDir: string;
  beforeEach(async () => {
    sinkDir = path.join(await mkdtemp(path.join(os.tmpdir(), "tidings-sink-")), "outbox");
  });
  afterEach(async () => {
    await rm(path.dirname(sinkDir), { recursive: true, force: true });
  });

  it("writes a parseable .eml named after the Message-ID, creating the directory", async () => {
    const transport = createEmailTransport({ from: FROM, sinkDir });
    expect(transport.describe()).toContain(path.resolve(sinkDir));
    expect(transport.describe()).toMatch(/sink/);

    const { trackingId, op } = operation("sink", {
      subject: "Überweisung erhalten ✓ — 受け取りました",
      text: "Bonjour 👋\nVotre reçu est prêt.",
      html: "<h1>Bonjour 👋</h1><p>Votre <em>reçu</em> est prêt.</p>",
    });
    const position = await enqueue(trackingId, op);
    const state = await withEmailBot({ sinkDir }, () => outcome(position));
    expect(state.status).toBe("Completed");

    const files = await readdir(sinkDir);
    expect(files).toEqual(["n-sink.email@tidings.test.eml"]);
    const raw = await readFile(path.join(sinkDir, files[0]!), "utf8");
    // The real RFC 5322 message: CRLF line ends, MIME headers, encoded unicode.
    expect(raw).toMatch(/\r\nMIME-Version: 1\.0\r\n/);
    expect(raw).not.toMatch(/[^\r]\n/);
    const parsed = parseMessage(raw);
    expect(parsed.headers["message-id"]).toBe(op.messageId);
    expect(parsed.headers["subject"]).toBe(op.subject);
    expect(parsed.headers["from"]).toBe(FROM);
    expect(parsed.headers["to"]).toBe(op.to[0]);
    expect(crlf(parsed.text)).toBe(op.text);
    expect(crlf(parsed.html)).toBe(op.html);

    const succeeded = (await emailEvents(trackingId)).at(-1)!;
    expect(succeeded.type).toBe("SucceededInSendingEmailEvent");
    expect(succeeded.payload).toMatchObject({
      messageId: op.messageId,
      accepted: op.to,
      rejected: [],
      response: `written to ${path.join(path.resolve(sinkDir), files[0]!)}`,
    });
  });
});
