/** The email concern's streams (declared in migrations/0002_notification.sql). */
export const EmailStreams = {
  /** SendEmailOp: everything needed to send one email. */
  operations: "email.operations",
  /** What became of each attempt: requested, succeeded, failed. */
  events: "email.events",
} as const;
