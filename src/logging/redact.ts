/**
 * One place that knows what a secret looks like, for everything an operator
 * reads: configuration errors, start-up lines, the transports' describe(),
 * and every log line (src/logging/logger.ts). It works on free text, so it
 * also catches a secret inside an error message someone else built.
 *
 * - URL credentials: `scheme://user:secret@host` → `scheme://user:***@host`,
 *   also in a malformed URL (`smtps//user:secret@host`) and when the password
 *   holds an unencoded `@`, `/` or `:` (everything up to the word's last `@`
 *   is taken as userinfo, so such a password is hidden whole, where a URL
 *   parser would cut it short and print the rest as the host).
 * - Secret parameters: `?password=...`, `&sslpassword=...`, `token=...`.
 * - Slack tokens (`xoxb-`, `xoxp-`, `xapp-`...): only the type prefix stays.
 * - Webhook signing secrets (`whsec_...`, Standard Webhooks): only the prefix
 *   stays. (API keys, `tdk_...`, are not hidden: the one place one is logged
 *   is the development key printed once at start, on purpose.)
 *
 * It errs on hiding too much: a false positive costs a `***` in a log line.
 * A user name alone (`postgres://postgres@host`) is not a secret and stays.
 */
export const REDACTED = "***";

/** `//`, then the userinfo up to the last `@` of the same word. */
const URL_USERINFO = /\/\/([^\s"'<>`]*)@/g;
const SECRET_PARAM = /(^|[?&;\s])(password|passwd|pwd|sslpassword|secret|token|access_token|api_key|apikey)=[^&#\s"'<>`]*/gi;
const SLACK_TOKEN = /\b(xox[a-z]|xapp)-[A-Za-z0-9-]+/g;
const WEBHOOK_SECRET = /\bwhsec_[A-Za-z0-9+/=_-]+/g;

/** `user:secret` → `user:***`; a user alone stays. */
function redactUserinfo(userinfo: string): string {
  const colon = userinfo.indexOf(":");
  return colon < 0 ? userinfo : `${userinfo.slice(0, colon + 1)}${REDACTED}`;
}

/** Hide every secret this module recognises in `text`. */
export function redactSecrets(text: string): string {
  return text
    .replace(URL_USERINFO, (_all, userinfo: string) => `//${redactUserinfo(userinfo)}@`)
    .replace(SECRET_PARAM, (_all, lead: string, name: string) => `${lead}${name}=${REDACTED}`)
    .replace(SLACK_TOKEN, `$1-${REDACTED}`)
    .replace(WEBHOOK_SECRET, `whsec_${REDACTED}`);
}

/**
 * A setting that holds a URL, however malformed: besides what
 * redactSecrets finds, a value with an `@` but no `//` at all
 * (`smtp:user:secret@host`, `user:secret@host`) has its userinfo hidden.
 */
export function redactUrl(value: string): string {
  const redacted = redactSecrets(value);
  if (redacted.includes("//")) return redacted;
  const at = redacted.lastIndexOf("@");
  if (at < 0) return redacted;
  const scheme = /^[A-Za-z][A-Za-z0-9+.-]*:(?=[^:@]*:)/.exec(redacted)?.[0] ?? "";
  return `${scheme}${redactUserinfo(redacted.slice(scheme.length, at))}${redacted.slice(at)}`;
}

/**
 * A value that is a secret as a whole (a token that failed its format
 * check, so no pattern above recognises it): a short prefix and its length,
 * enough to tell "a Slack token pasted with a stray quote" from "the wrong
 * variable".
 */
export function describeSecret(value: string): string {
  const shown = value.slice(0, Math.min(5, Math.floor(value.length / 4)));
  return `${shown}${REDACTED} (${value.length} characters)`;
}

/**
 * Keys whose values are hidden whole in structured log objects (pino's
 * `redact`), at the top level and one level down (`{ headers: { authorization } }`).
 */
export const SECRET_KEYS = ["password", "secret", "token", "apiKey", "authorization", "cookie", "SLACK_BOT_TOKEN"] as const;

/** Keys whose values are connection strings: logged with the credentials hidden. */
export const URL_KEYS = ["url", "connectionString", "DATABASE_URL", "SMTP_URL", "smtpUrl"] as const;
