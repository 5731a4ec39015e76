import { failureEvent } from "../channels/channel";
import { slackChannel } from "./slack.channel";
import type { ExternalBot, HandlerContext } from "../bots/bot";
import type { Tx } from "../db/database";
import { ExternalError } from "../errors/errors";
import { appendFor, type AppendBuffer } from "../streams/append";
import type { StreamRecord } from "../streams/interfaces";
import { SlackStreams } from "./slack.streams";
import { classifySlackError, lookupFailed, mayHaveBeenPosted, type PostResult, type SlackPoster } from "./client";
import {
  FailedToSendSlackMessageEvent,
  SendSlackMessageOp,
  SendSlackMessageRequestedEvent,
  SendSlackMessageAttemptFailedEvent,
  SlackRecordTypes,
  SucceededInSendingSlackMessageEvent,
} from "./slack.schemas";

export interface SlackDeps {
  slack: { poster: SlackPoster };
}

/** A post, or the message an earlier attempt had posted (found in the channel's history). */
export type SlackSendResult = PostResult & { foundInHistory?: true };

export const SLACK_CONCERN = slackChannel.concern;
export const SLACK_ACTOR = "slack_bot";

/** The runner parsed the payload with the schema already; parsing again gives the type without a cast. */
function opOf(record: StreamRecord): SendSlackMessageOp {
  return SendSlackMessageOp.parse(record.payload);
}

/** Every event of an operation has the notification's tracking id and points back at the operation. */
async function appendEvent(ctx: { tx: Tx; out?: AppendBuffer }, record: StreamRecord, type: string, payload: unknown): Promise<void> {
  await appendFor(ctx, SlackStreams.events, {
    id: record.id,
    type,
    payload,
    tags: record.tags,
    causedBy: { stream: record.stream, position: record.position },
  });
}

function nullableString(value: unknown): string | null {
  return typeof value === "string" ? value : null;
}

function nullableInt(value: unknown): number | null {
  return typeof value === "number" && Number.isInteger(value) ? value : null;
}

const FAILURE_TYPES = { attemptFailed: SlackRecordTypes.SendSlackMessageAttemptFailedEvent, failed: SlackRecordTypes.FailedToSendSlackMessageEvent };

/**
 * Posts each SendSlackMessageOp and records what happened on slack.events:
 * Requested (every attempt, in the claim transaction), then either Succeeded
 * (channel and ts) or, once no retry follows, Failed. A transient failure
 * that will be retried writes no event: the saga takes any failure event as
 * the operation's outcome, and the handling history already shows each attempt.
 * Every post carries the operation id in its metadata; after an attempt that
 * may have posted without recording it (abandoned, or failed in doubt), the
 * channel's history is searched first and a message found there is the
 * success (docs/workflow.md, "Slack messages").
 */
export function createSlackBot(): ExternalBot<SlackDeps, SlackSendResult> {
  const warned = new Set<string>();
  return {
    kind: "external",
    stream: slackChannel.streams.operations,
    concern: SLACK_CONCERN,
    actor: SLACK_ACTOR,
    schemas: { [SlackRecordTypes.SendSlackMessageOp]: SendSlackMessageOp },
    // Claims and outcomes of the sends that arrive together share transactions.
    batch: { maxSize: 32 },
    // The operations the notification bot writes are claimed in its transaction and sent as it commits.
    sendsInline: true,

    async prepare(ctx: HandlerContext<SlackDeps>) {
      const { record, attempt } = ctx;
      const op = opOf(record);
      await appendEvent(
        ctx,
        record,
        SlackRecordTypes.SendSlackMessageRequestedEvent,
        SendSlackMessageRequestedEvent.parse({ operationId: op.operationId, attempt, channel: op.channel }),
      );
    },

    async perform({ record, attempt, deps, signal, logger, previousAttempt }) {
      const op = opOf(record);
      // An earlier attempt that may have reached Slack without its outcome being
      // recorded: find its message (by the operation id in its metadata) rather
      // than post a second one.
      if (previousAttempt && (previousAttempt.abandoned || mayHaveBeenPosted(previousAttempt.lastError))) {
        const found = await deps.slack.poster.findPosted({ channel: op.channel, operationId: op.operationId, since: record.recordedAt }, signal).catch((error: unknown) => {
          throw error instanceof ExternalError ? error : lookupFailed(classifySlackError(error, "conversations.history"));
        });
        if (found.status === "found") {
          logger.info({ operationId: op.operationId, ts: found.post.ts }, "an earlier attempt had posted this message; recording it instead of posting again");
          return { ...found.post, foundInHistory: true };
        }
        if (found.status === "unchecked" && !warned.has(found.key)) {
          // Once per reason and process: a missing history scope would otherwise warn on every retry.
          warned.add(found.key);
          logger.warn(
            { operationId: op.operationId, reason: found.reason },
            "cannot tell whether an earlier attempt posted this message; posting (a duplicate is possible). Grant channels:history, groups:history, im:history (and channels:read, groups:read, im:write for #names and users) to avoid it",
          );
        }
      }
      try {
        return await deps.slack.poster.postMessage(
          {
            channel: op.channel,
            text: op.text,
            ...(op.mrkdwn === undefined ? {} : { mrkdwn: op.mrkdwn }),
            ...(op.subject === undefined ? {} : { subject: op.subject }),
            ...(op.blocks === undefined ? {} : { blocks: op.blocks }),
            operationId: op.operationId,
            attempt,
          },
          signal,
        );
      } catch (error) {
        throw classifySlackError(error);
      }
    },

    async succeeded(ctx) {
      const { record, attempt, result } = ctx;
      const op = opOf(record);
      await appendEvent(
        ctx,
        record,
        SlackRecordTypes.SucceededInSendingSlackMessageEvent,
        SucceededInSendingSlackMessageEvent.parse({
          operationId: op.operationId,
          attempt,
          channel: result.channel,
          ts: result.ts,
          ...(result.foundInHistory ? { foundInHistory: true } : {}),
        }),
      );
    },

    async failed(ctx) {
      const { record, attempt, error } = ctx;
      const details = error instanceof ExternalError ? error.details : {};
      const { type, payload } = failureEvent(ctx, FAILURE_TYPES, {
        operationId: opOf(record).operationId,
        attempt,
        error: error.message || error.name,
        slackError: nullableString(details.slackError),
        httpStatus: nullableInt(details.httpStatus),
      });
      await appendEvent(
        ctx,
        record,
        type,
        (type === SlackRecordTypes.FailedToSendSlackMessageEvent ? FailedToSendSlackMessageEvent : SendSlackMessageAttemptFailedEvent).parse(payload),
      );
    },
  };
}
