import { z } from "zod";

/**
 * The status changes a webhook endpoint can subscribe to (`events` at
 * registration; all of them when absent). Each is the `type` of the body
 * delivered, as Standard Webhooks lays a body out: `{type, timestamp, data}`.
 */
export const WEBHOOK_EVENT_TYPES = [
  "notification.requested",
  "notification.channel.sent",
  "notification.channel.retrying",
  "notification.channel.failed",
  "notification.sent",
  "notification.partially_sent",
  "notification.failed",
  "notification.not_sent",
  "notification.cancelled",
] as const;
export const WebhookEventType = z.enum(WEBHOOK_EVENT_TYPES);
export type WebhookEventType = z.infer<typeof WebhookEventType>;

/** Endpoint ids: `wh_` and 24 base62 characters (random). */
export const endpointId = z.string().regex(/^wh_[A-Za-z0-9]{1,64}$/, "must be a webhook endpoint id (wh_...)");

export const WebhookEndpointRegisteredEvent = z.strictObject({
  url: z.string().url().max(2048),
  /** Subscribed event types, or null for every one. */
  events: z.array(WebhookEventType).nullable(),
  description: z.string().max(500).nullable(),
  registeredBy: z.string().min(1).max(200),
});
export type WebhookEndpointRegisteredEvent = z.infer<typeof WebhookEndpointRegisteredEvent>;

export const WebhookEndpointRemovedEvent = z.strictObject({ removedBy: z.string().min(1).max(200) });

export const WebhookEndpointDisabledEvent = z.strictObject({
  reason: z.string().min(1),
  /** The deliveries whose failures disabled it, newest first. */
  failedDeliveries: z.array(z.number().int()),
});

/** The body delivered, exactly as signed: Standard Webhooks' `{type, timestamp, data}`. */
export const WebhookBody = z.strictObject({
  type: WebhookEventType,
  timestamp: z.string(),
  data: z.record(z.string(), z.unknown()),
});
export type WebhookBody = z.infer<typeof WebhookBody>;

/**
 * One message to one endpoint: everything needed to deliver it (the Naos
 * rule), the secret aside (webhook.signing_secrets). `messageId` is the
 * `webhook-id` header: the same on every attempt, so a receiver can drop a
 * repeat.
 */
export const DeliverWebhookOp = z.strictObject({
  endpointId,
  url: z.string().url().max(2048),
  messageId: z.string().regex(/^msg_[A-Za-z0-9_-]+$/),
  eventType: WebhookEventType,
  notificationId: z.string().min(1).max(200),
  /** The body as a JSON string: signed and sent byte for byte as stored. */
  body: z.string().max(1_000_000),
});
export type DeliverWebhookOp = z.infer<typeof DeliverWebhookOp>;

export const WebhookRecordTypes = {
  WebhookEndpointRegisteredEvent: "WebhookEndpointRegisteredEvent",
  WebhookEndpointRemovedEvent: "WebhookEndpointRemovedEvent",
  WebhookEndpointDisabledEvent: "WebhookEndpointDisabledEvent",
  DeliverWebhookOp: "DeliverWebhookOp",
} as const;
