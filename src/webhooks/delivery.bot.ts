import { sql } from "kysely";
import { Webhook } from "standardwebhooks";
import type { ExternalBot, HandlerContext } from "../bots/bot";
import type { Tx } from "../db/database";
import { ExternalError } from "../errors/errors";
import type { Channel } from "../entities/entity.schemas";
import type { NotificationDeps } from "../notification/notification.bot";
import { channelOf } from "../notification/channels";
import { append, appendOne } from "../streams/append";
import type { StreamRecord } from "../streams/interfaces";
import { queueHandling } from "../streams/handling";
import { streamTable, handlingTable } from "../streams/names";
import { getEndpoint, signingSecret } from "./endpoint.repository";
import { postWebhook, type WebhookResponse, type WebhookSenderSettings } from "./sender";
import { DeliverWebhookOp, WebhookEndpointDisabledEvent, WebhookRecordTypes } from "./webhook.schemas";
import { WEBHOOK_BOT, WebhookStreams } from "./webhook.streams";
import { SETTLED_STATUSES as SETTLED } from "../streams/transitions";

export interface WebhookSettings extends WebhookSenderSettings {
  /** WEBHOOK_DISABLE_AFTER: an endpoint whose latest this-many deliveries all failed for good is disabled. */
  disableAfter: number;
}

/** Safe defaults for a process that did not configure webhooks (public addresses only). */
export const DEFAULT_WEBHOOK_SETTINGS: WebhookSettings = { timeoutMs: 10_000, allowPrivateAddresses: false, disableAfter: 5 };

export interface WebhookDeps {
  webhooks?: WebhookSettings;
}

export type WebhookBotDeps = WebhookDeps & NotificationDeps;

/** How long a delivery waits, at least, for an earlier one of its notification to settle before looking again. */
const WAIT_FOR_EARLIER_MS = 250;

/** What prepare found for a claim, handed to perform (which runs with no transaction open). */
type Prepared = { secret: string } | { notDelivered: string };

/** A delivery that must wait for an earlier one of the same notification to the same endpoint: "not yet", not a failure. */
async function earlierUnsettled(tx: Tx, op: DeliverWebhookOp, record: StreamRecord, timeoutMs: number): Promise<{ position: number; waitMs: number } | null> {
  const { rows } = await sql<{ position: number; status: string | null; due_in_ms: number | null }>`
    select o.position, h.status::text as status,
           greatest(0, extract(epoch from (h.updated_at + ((h.last_details->>'retryInMs')::bigint * interval '1 millisecond') - now())) * 1000)::bigint as due_in_ms
    from ${streamTable(WebhookStreams.deliveries)} o
    left join ${handlingTable(WebhookStreams.deliveries)} h on h.position = o.position and h.concern = ${WEBHOOK_BOT}
    where o.payload->>'endpointId' = ${op.endpointId} and o.id = ${record.id} and o.position < ${record.position}
      and coalesce(h.status::text, 'AvailableByDefault') <> all (${SETTLED}::text[])
    order by o.position limit 1`.execute(tx);
  const row = rows[0];
  if (!row) return null;
  // Look again when the earlier one can have settled: a send in flight within
  // its timeout, a retry once it is due, one not yet claimed in a moment.
  // Waiting is no attempt (prepare's "not yet": a self-cancel in the history).
  const due = row.status === "Running" ? timeoutMs : Number(row.due_in_ms ?? 0);
  return { position: Number(row.position), waitMs: Math.max(WAIT_FOR_EARLIER_MS, due + 100) };
}

/**
 * This delivery has settled: the next one of the same notification to the
 * same endpoint, if it waits its turn, is handled now rather than when it
 * planned to look again (with the commit: the queueing is in this transaction).
 */
async function wakeNext(tx: Tx, record: StreamRecord): Promise<void> {
  const op = record.payload as DeliverWebhookOp;
  const { rows } = await sql<{ position: number }>`
    select o.position
    from ${streamTable(WebhookStreams.deliveries)} o
    left join ${handlingTable(WebhookStreams.deliveries)} h on h.position = o.position and h.concern = ${WEBHOOK_BOT}
    where o.id = ${record.id} and o.payload->>'endpointId' = ${op.endpointId} and o.position > ${record.position}
      and h.status::text = 'AvailableAfterSelfCancellation'
    order by o.position limit 1`.execute(tx);
  if (rows[0]) await queueHandling(tx, WebhookStreams.deliveries, WEBHOOK_BOT, [Number(rows[0].position)]);
}

/**
 * Delivers each DeliverWebhookOp of webhook.deliveries: signed by the
 * Standard Webhooks specification (`webhook-id`, `webhook-timestamp`,
 * `webhook-signature`, HMAC-SHA256 with the endpoint's secret), in order per
 * notification and endpoint (a delivery waits while an earlier one is not
 * settled), retried on the WEBHOOK_RETRY_SCHEDULE after a 5xx, 408, 429, a
 * timeout or a network error; any other answer fails it for good. The
 * delivery's handling state is its status; every attempt is in its history.
 * When an endpoint's latest WEBHOOK_DISABLE_AFTER deliveries all failed for
 * good, it is disabled and the internal team alerted.
 */
export function createWebhookDeliveryBot(): ExternalBot<WebhookBotDeps, WebhookResponse> {
  const prepared = new Map<string, Prepared>();
  const key = (record: StreamRecord, attempt: number) => `${record.position}:${attempt}`;
  return {
    kind: "external",
    stream: WebhookStreams.deliveries,
    concern: WEBHOOK_BOT,
    actor: WEBHOOK_BOT,
    schemas: { [WebhookRecordTypes.DeliverWebhookOp]: DeliverWebhookOp },

    async prepare({ tx, record, attempt, deps }) {
      const op = record.payload as DeliverWebhookOp;
      const endpoint = await getEndpoint(tx, op.endpointId);
      if (!endpoint || endpoint.status !== "active") {
        prepared.set(key(record, attempt), { notDelivered: `endpoint ${op.endpointId} is ${endpoint?.status ?? "unknown"}` });
        return;
      }
      const earlier = await earlierUnsettled(tx, op, record, (deps.webhooks ?? DEFAULT_WEBHOOK_SETTINGS).timeoutMs);
      if (earlier) {
        return {
          retryAfterMs: earlier.waitMs,
          reason: `waiting for the earlier delivery at position ${earlier.position} of this notification to this endpoint (in order per notification)`,
        };
      }
      prepared.set(key(record, attempt), { secret: await signingSecret(tx, op.endpointId) });
    },

    async perform({ record, attempt, deps, signal, logger }) {
      const op = record.payload as DeliverWebhookOp;
      const ready = prepared.get(key(record, attempt));
      prepared.delete(key(record, attempt));
      if (!ready) throw new ExternalError("the delivery's preparation was lost (worker restarted between claim and send)", true, { code: "not_prepared" });
      if ("notDelivered" in ready) {
        throw new ExternalError(`not delivered: ${ready.notDelivered}`, false, { code: "endpoint_inactive", classification: "permanent" });
      }
      const timestamp = new Date();
      const signature = new Webhook(ready.secret).sign(op.messageId, timestamp, op.body);
      const response = await postWebhook(
        {
          url: op.url,
          body: op.body,
          headers: { "webhook-id": op.messageId, "webhook-timestamp": String(Math.floor(timestamp.getTime() / 1_000)), "webhook-signature": signature },
        },
        deps.webhooks ?? DEFAULT_WEBHOOK_SETTINGS,
        signal,
      );
      logger.info({ endpointId: op.endpointId, messageId: op.messageId, eventType: op.eventType, httpStatus: response.status, attempt }, "webhook delivered");
      return response;
    },

    // Delivered: the completion is the record (Completed in its handling state).
    async succeeded({ tx, record }) {
      await wakeNext(tx, record);
    },

    async failed(ctx) {
      if (!ctx.final) return;
      await wakeNext(ctx.tx, ctx.record);
      const details = ctx.error instanceof ExternalError ? ctx.error.details : {};
      if (details.code === "endpoint_inactive") return;
      await disableIfFailing(ctx);
    },
  };
}

/**
 * After a delivery failed for good: if the endpoint's latest
 * WEBHOOK_DISABLE_AFTER settled deliveries (this one included) all failed,
 * disable it (a record, once) and alert the internal team, as an email (and
 * a Slack message when INTERNAL_TEAM_SLACK_CHANNEL is set) whose outcome no
 * saga awaits, like the notification alerts.
 */
async function disableIfFailing(ctx: HandlerContext<WebhookBotDeps> & { error: Error }): Promise<void> {
  const { tx, record, deps } = ctx;
  const op = record.payload as DeliverWebhookOp;
  const bound = (deps.webhooks ?? DEFAULT_WEBHOOK_SETTINGS).disableAfter;
  const { rows } = await sql<{ position: number; status: string }>`
    select o.position, h.status::text as status
    from ${streamTable(WebhookStreams.deliveries)} o
    join ${handlingTable(WebhookStreams.deliveries)} h on h.position = o.position and h.concern = ${WEBHOOK_BOT}
    where o.payload->>'endpointId' = ${op.endpointId} and o.position <> ${record.position} and h.status in ('Completed', 'Failed')
    order by h.updated_at desc, o.position desc
    limit ${bound - 1}`.execute(tx);
  if (rows.length < bound - 1 || rows.some((r) => r.status !== "Failed")) return;

  await sql`select pg_advisory_xact_lock(hashtextextended(${`webhook endpoint ${op.endpointId}`}, 0))`.execute(tx);
  const endpoint = await getEndpoint(tx, op.endpointId);
  if (!endpoint || endpoint.status !== "active") return;
  const failedDeliveries = [record.position, ...rows.map((r) => Number(r.position))];
  const reason = `its latest ${bound} deliveries failed for good (WEBHOOK_DISABLE_AFTER=${bound}); the last: ${ctx.error.message}`;
  const disabled = await appendOne(
    tx,
    WebhookStreams.endpoints,
    {
      id: op.endpointId,
      type: WebhookRecordTypes.WebhookEndpointDisabledEvent,
      payload: WebhookEndpointDisabledEvent.parse({ reason, failedDeliveries }),
      causedBy: { stream: record.stream, position: record.position },
    },
    "skip_if_id_and_type_exists",
  );
  if (!disabled.written) return;
  ctx.logger.warn({ endpointId: op.endpointId, url: endpoint.url, failedDeliveries }, "webhook endpoint disabled");

  const team = deps.notification;
  const subject = `[tidings] webhook endpoint ${op.endpointId} disabled: its deliveries keep failing`;
  const text = [
    `Webhook endpoint ${op.endpointId} (${endpoint.url}) was disabled: ${reason}.`,
    "",
    `Registered by: ${endpoint.registeredBy}`,
    `Failed deliveries (webhook.deliveries positions): ${failedDeliveries.join(", ")}`,
    "",
    "Nothing more is delivered to it. Once the receiver is fixed, register it again (POST /v1/webhooks) and re-drive",
    "the failed deliveries if they are still wanted (npm run redrive, stream webhook.deliveries).",
    "",
    `Ask: select * from audit.webhook_deliveries where endpoint_id = '${op.endpointId}' order by position desc;`,
  ].join("\n");
  const destinations: Array<[Channel, string]> = [["email", team.internalTeamEmail]];
  if (team.internalTeamSlackChannel) destinations.push(["slack", team.internalTeamSlackChannel]);
  for (const [channel, destination] of destinations) {
    const descriptor = channelOf(channel);
    const message = {
      // ":alert-" marks an internal alert: no webhook reports it (messages.ts).
      operationId: `${op.endpointId}:alert-disabled-${disabled.position}:${channel}`,
      notificationId: op.endpointId,
      purpose: "internal_alert" as const,
      entityId: null,
      destination,
      subject,
      text,
      preformatted: true,
      tags: { alert: "webhook-endpoint-disabled" },
    };
    await append(tx, descriptor.streams.operations, [
      { id: op.endpointId, causedBy: { stream: WebhookStreams.endpoints, position: disabled.position }, ...descriptor.operation(message, team) },
    ]);
  }
}
