// Plain words beside the internal names: what a record type means, and what
// an SMTP or Slack error says, for an operator who does not know the streams.

const TYPES = {
  SendNotificationToEntityOp: "asked to notify an entity",
  SendNotificationRequestedEvent: "accepted: preparing it",
  NotificationDelayedEvent: "scheduled for later",
  NotificationCancelledEvent: "cancelled before its time",
  PreparedToSendOnAllChannelsEvent: "ready to send on every channel",
  PreparedToSendOnSomeChannelsEvent: "ready to send on some channels (others skipped)",
  CouldNotPrepareToSendOnAnyChannelEvent: "not sent: no channel could be prepared",
  CouldNotGetOrUseAudienceEvent: "not sent: the entity could not be read or used",
  AudienceOptedOutOfAllChannelsEvent: "not sent: the entity opted out of every channel",
  SentOnAllPreparedChannelsEvent: "sent",
  SentOnSomePreparedChannelsEvent: "partly sent: some channels failed",
  CouldNotSendOnAnyPreparedChannelEvent: "failed: no channel could send it",
  FellBackToNextChannelEvent: "trying the next channel",
  FailedNotificationSentToInternalTeamEvent: "the internal team was alerted",
  AlertInternalTeamOp: "alert the internal team",
  ResendNotificationOp: "an operator asked to resend it",
  ResendRequestedEvent: "resending to the entity's current details",
  SendEmailOp: "send an email",
  SendEmailRequestedEvent: "email handed to the mail server",
  SucceededInSendingEmailEvent: "email accepted by the mail server",
  SendEmailAttemptFailedEvent: "an email attempt failed (it will be tried again)",
  FailedToSendEmailEvent: "email failed",
  SendSlackMessageOp: "post a Slack message",
  SendSlackMessageRequestedEvent: "Slack message handed to Slack",
  SucceededInSendingSlackMessageEvent: "posted on Slack",
  SendSlackMessageAttemptFailedEvent: "a Slack attempt failed (it will be tried again)",
  FailedToSendSlackMessageEvent: "Slack message failed",
};

/** A record type in plain words, or null when the console has none for it. */
export function plainType(type) {
  return TYPES[type] ?? null;
}

// Enhanced status codes (RFC 3463) an operator meets most.
const SMTP = {
  "5.1.1": "the address does not exist",
  "5.1.2": "the address's domain does not exist",
  "5.1.3": "the address is not valid",
  "5.1.10": "the address does not exist",
  "5.2.1": "the mailbox is disabled",
  "5.2.2": "the mailbox is full",
  "4.2.2": "the mailbox is full for now",
  "5.2.3": "the message is too large",
  "5.3.4": "the message is too large",
  "5.4.1": "the receiving server refused it",
  "5.7.1": "the receiving server refused it (policy or spam filter)",
  "4.7.1": "the receiving server refused it for now (try later)",
};

const SLACK = {
  channel_not_found: "the Slack channel does not exist",
  not_in_channel: "the Slack app is not in the channel",
  is_archived: "the Slack channel is archived",
  invalid_auth: "the Slack token is not valid",
  not_authed: "no Slack token was given",
  account_inactive: "the Slack token's account is inactive",
  ratelimited: "Slack asked to slow down",
  rate_limited: "Slack asked to slow down",
  msg_too_long: "the Slack message is too long",
};

/** An error as an operator reads it: "the address does not exist (550 5.1.1)"; null when nothing is recognised. */
export function plainError(error) {
  if (!error) return null;
  const text = String(error);
  const smtp = text.match(/\b([245])\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b/);
  if (smtp) {
    const code = smtp[2];
    const words = SMTP[code] ?? (code.startsWith("4") ? "the receiving server refused it for now" : code.startsWith("5") ? "the receiving server refused it for good" : null);
    if (words) return `${words} (${smtp[0].replace("-", " ")})`;
  }
  for (const [code, words] of Object.entries(SLACK)) if (new RegExp(`\\b${code}\\b`).test(text)) return `${words} (${code})`;
  if (/ECONNREFUSED|ETIMEDOUT|ENOTFOUND|ECONNRESET/.test(text)) return "the server could not be reached";
  return null;
}

/** "failed: the address does not exist (550 5.1.1)": a status with the reason in plain words, when there is one. */
export function plainStatus(status, error) {
  const words = String(status).replace(/_/g, " ");
  const why = plainError(error);
  return why ? `${words}: ${why}` : words;
}
