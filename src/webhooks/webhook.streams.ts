/** The webhook subsystem's streams (declared in migrations/0007_webhooks.sql). */
export const WebhookStreams = {
  /** Endpoints (id = endpoint id): registered, removed, disabled. No secrets. */
  endpoints: "webhook.endpoints",
  /** One message to one endpoint (id = the notification's tracking id); its handling state is the delivery's. */
  deliveries: "webhook.deliveries",
} as const;

/** The dispatcher's row in tidings.checkpoints. */
export const WEBHOOK_DISPATCH_CHECKPOINT = "webhook_dispatch";

/** The delivery bot's actor and concern. */
export const WEBHOOK_BOT = "webhook_bot";
