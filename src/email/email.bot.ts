import { failureEvent } from "../channels/channel";
import { emailChannel } from "./email.channel";
import type { ExternalBot, HandlerContext } from "../bots/bot";
import { ExternalError } from "../errors/errors";
import { appendFor } from "../streams/append";
import type { StreamRecord } from "../streams/interfaces";
import { EmailStreams } from "./email.streams";
import { EmailRecordTypes, FailedToSendEmailEvent, SendEmailAttemptFailedEvent, SendEmailOp, SendEmailRequestedEvent, SucceededInSendingEmailEvent } from "./email.schemas";
import { classifySmtpError, type EmailSendResult, type EmailTransport } from "./transport";

export interface EmailDeps {
  email: { transport: EmailTransport; from: string };
}

export type SendResult = EmailSendResult;

/** The runner parsed the payload with `schemas.SendEmailOp` before any handler sees it. */
function operationOf(record: StreamRecord): SendEmailOp {
  return record.payload as SendEmailOp;
}

/** Every event of one operation shares the notification's tracking id and points at the operation. */
async function appendEvent(ctx: HandlerContext<EmailDeps>, type: string, payload: unknown): Promise<void> {
  await appendFor(ctx, EmailStreams.events, { id: ctx.record.id, type, payload, causedBy: { stream: ctx.record.stream, position: ctx.record.position } });
}

const FAILURE_TYPES = { attemptFailed: EmailRecordTypes.SendEmailAttemptFailedEvent, failed: EmailRecordTypes.FailedToSendEmailEvent };

/** Header values must stay on one line whatever an id contains. */
function headerValue(value: string): string {
  return value.replace(/[\r\n]+/g, " ");
}

/**
 * Sends each SendEmailOp of `email.operations` and records what happened in
 * `email.events`: Requested at every claim, then Succeeded, or Failed once no
 * further attempt follows (a transient failure that will be retried writes
 * no event: the saga takes any failure event as the outcome; the attempts
 * are in the handling history).
 */
export function createEmailBot(): ExternalBot<EmailDeps, SendResult> {
  return {
    kind: "external",
    stream: emailChannel.streams.operations,
    concern: emailChannel.concern,
    actor: "email_bot",
    schemas: { [EmailRecordTypes.SendEmailOp]: SendEmailOp },
    // Claims and outcomes of the sends that arrive together share transactions.
    batch: { maxSize: 32 },
    // The operations the notification bot writes are claimed in its transaction and sent as it commits.
    sendsInline: true,

    async prepare(ctx) {
      const op = operationOf(ctx.record);
      await appendEvent(
        ctx,
        EmailRecordTypes.SendEmailRequestedEvent,
        SendEmailRequestedEvent.parse({ operationId: op.operationId, attempt: ctx.attempt, to: op.to, subject: op.subject }),
      );
    },

    async perform({ record, deps, signal, logger, attempt }) {
      const op = operationOf(record);
      let result: SendResult;
      try {
        result = await deps.email.transport.send(
          {
            from: deps.email.from,
            to: op.to,
            subject: op.subject,
            text: op.text,
            ...(op.html === undefined ? {} : { html: op.html }),
            // The op's own id, not a fresh one: a resend after a crash
            // carries the same Message-ID, so the receiver can drop it.
            messageId: op.messageId,
            headers: {
              "X-Tidings-Notification-Id": headerValue(op.notificationId),
              "X-Tidings-Operation-Id": headerValue(op.operationId),
            },
          },
          signal,
        );
      } catch (thrown) {
        throw classifySmtpError(thrown);
      }
      // A server that takes the message for nobody has delivered nothing;
      // the same recipients would be refused again.
      if (result.accepted.length === 0) {
        throw new ExternalError(`every recipient was rejected (${result.rejected.join(", ") || op.to.join(", ")}): ${result.response}`, false, {
          smtpCode: null,
          code: "EENVELOPE",
          classification: "permanent",
          rejected: result.rejected,
          response: result.response,
        });
      }
      logger.info({ operationId: op.operationId, messageId: result.messageId, accepted: result.accepted.length, rejected: result.rejected.length, attempt }, "email sent");
      return result;
    },

    async succeeded(ctx) {
      const op = operationOf(ctx.record);
      const { result } = ctx;
      await appendEvent(
        ctx,
        EmailRecordTypes.SucceededInSendingEmailEvent,
        SucceededInSendingEmailEvent.parse({
          operationId: op.operationId,
          attempt: ctx.attempt,
          messageId: result.messageId,
          accepted: result.accepted,
          rejected: result.rejected,
          response: result.response,
        }),
      );
    },

    async failed(ctx) {
      const op = operationOf(ctx.record);
      const smtpCode = ctx.error instanceof ExternalError ? ctx.error.details.smtpCode : null;
      const { type, payload } = failureEvent(ctx, FAILURE_TYPES, {
        operationId: op.operationId,
        attempt: ctx.attempt,
        error: ctx.error.message || ctx.error.name,
        smtpCode: typeof smtpCode === "number" ? smtpCode : null,
      });
      await appendEvent(ctx, type, (type === EmailRecordTypes.FailedToSendEmailEvent ? FailedToSendEmailEvent : SendEmailAttemptFailedEvent).parse(payload));
    },
  };
}
