import { AppendBuffer } from "../../src/streams/append";
import pino from "pino";
import type { HandlerContext } from "../../src/bots/bot";
import type { Tx } from "../../src/db/database";
import { createEmailBot, type EmailDeps } from "../../src/email/email.bot";
import type { SendEmailOp } from "../../src/email/email.schemas";
import type { EmailMessage, EmailSendResult, EmailTransport } from "../../src/email/transport";
import { ExternalError } from "../../src/errors/errors";
import type { StreamRecord } from "../../src/streams/interfaces";

const logger = pino({ level: "silent" });

const op: SendEmailOp = {
  operationId: "n-1:email",
  notificationId: "n-1",
  purpose: "notification",
  entityId: "e-1",
  to: ["a@example.com"],
  subject: "Hello",
  text: "Hi",
  messageId: "<n-1.email@tidings.test>",
  tags: {},
};

const record: StreamRecord = {
  stream: "email.operations",
  position: 7,
  id: "n-1",
  type: "SendEmailOp",
  payload: op,
  tags: {},
  causedBy: null,
  recordedAt: new Date(),
  recordedBy: "tidings_notification_bot",
  txId: "1",
  feedKey: "1",
};

function fakeTransport(send: (message: EmailMessage) => Promise<EmailSendResult>): EmailTransport & { sent: EmailMessage[] } {
  const sent: EmailMessage[] = [];
  return {
    sent,
    describe: () => "fake",
    send: async (message) => {
      sent.push(message);
      return send(message);
    },
    close: async () => {},
  };
}

function performWith(transport: EmailTransport) {
  const deps: EmailDeps = { email: { transport, from: "noreply@tidings.test" } };
  return createEmailBot().perform({ record, attempt: 1, deps, logger, signal: new AbortController().signal });
}

describe("email bot perform", () => {
  it("sends with the op's Message-ID and the configured sender", async () => {
    const transport = fakeTransport(async (m) => ({ messageId: m.messageId, accepted: m.to, rejected: [], response: "250 ok" }));
    const result = await performWith(transport);
    expect(result.accepted).toEqual(["a@example.com"]);
    expect(transport.sent[0]).toMatchObject({ from: "noreply@tidings.test", messageId: op.messageId, to: op.to });
    expect(transport.sent[0]).not.toHaveProperty("html");
  });

  it("treats a send that every recipient refused as a permanent failure", async () => {
    const transport = fakeTransport(async (m) => ({ messageId: m.messageId, accepted: [], rejected: m.to, response: "250 ok" }));
    const error = await performWith(transport).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ExternalError);
    expect((error as ExternalError).transient).toBe(false);
    expect((error as ExternalError).details).toMatchObject({ smtpCode: null, rejected: ["a@example.com"] });
  });

  it("classifies what the transport throws", async () => {
    const transport = fakeTransport(async () => {
      throw Object.assign(new Error("Message failed: 451 4.3.0 later"), { code: "EMESSAGE", responseCode: 451 });
    });
    const error = (await performWith(transport).catch((e: unknown) => e)) as ExternalError;
    expect(error).toBeInstanceOf(ExternalError);
    expect(error.transient).toBe(true);
    expect(error.details.smtpCode).toBe(451);
  });
});

describe("email bot failed", () => {
  const context = (appended: unknown[]): HandlerContext<EmailDeps> & { out: AppendBuffer } => {
    const out = new AppendBuffer();
    const add = out.add.bind(out);
    out.add = (stream, r, strategy) => {
      appended.push({ stream, ...r });
      add(stream, r, strategy);
    };
    return {
      // Appends go through the batch's buffer: the transaction itself is never touched.
      tx: new Proxy(
        {},
        {
          get: () => {
            throw new Error("the transaction must not be used");
          },
        },
      ) as Tx,
      record,
      attempt: 1,
      deps: {
        email: {
          transport: fakeTransport(async () => {
            throw new Error("unused");
          }),
          from: "x@example.com",
        },
      },
      logger,
      now: new Date(),
      out,
    };
  };

  it("a failure that will be retried writes an AttemptFailed event with the error and the delay, not an outcome", async () => {
    const appended: unknown[] = [];
    await createEmailBot().failed!({ ...context(appended), error: new ExternalError("451 greylisted", true, { smtpCode: 451 }), final: false, transient: true, retryInMs: 60_000 });
    expect(appended).toEqual([
      expect.objectContaining({
        stream: "email.events",
        type: "SendEmailAttemptFailedEvent",
        payload: { operationId: expect.any(String), attempt: 1, error: "451 greylisted", smtpCode: 451, retryInMs: 60_000 },
      }),
    ]);
  });

  it("a final failure writes FailedToSendEmailEvent", async () => {
    const appended: unknown[] = [];
    await createEmailBot().failed!({ ...context(appended), error: new ExternalError("550 no such user", false, { smtpCode: 550 }), final: true, transient: false });
    expect(appended).toEqual([expect.objectContaining({ type: "FailedToSendEmailEvent", payload: expect.objectContaining({ smtpCode: 550, reason: "permanent" }) })]);
  });
});
