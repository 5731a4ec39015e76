/** The Slack concern's streams (declared in migrations/0002_notification.sql). */
export const SlackStreams = {
  /** SendSlackMessageOp: everything needed to post one message. */
  operations: "slack.operations",
  /** What became of each attempt: requested, succeeded, failed. */
  events: "slack.events",
} as const;
