import { asciiDomain, parseSender } from "../util/mailAddress";

/**
 * The sender (EMAIL_FROM) and what follows from it: the domain every
 * Message-ID ends in, and whether a real mail system will take mail from it.
 */

export { asciiDomain, parseSender };

/** A domain literal (`[192.0.2.1]`) is kept as written. */
const DOMAIN_LITERAL = /^\[[\x21-\x5a\x5e-\x7e]+\]$/;

/**
 * Domains no mail system on the internet takes mail from: single-label
 * names (`localhost`, `mailhost`), the special-use names of RFC 2606 and
 * RFC 6761 (`.invalid`, `.test`, `.example`, `.localhost`,
 * `example.com/.net/.org`), `.local` (mDNS) and `.localdomain`.
 */
export function isPlaceholderDomain(domain: string): boolean {
  const d = domain.toLowerCase().replace(/\.$/, "");
  if (DOMAIN_LITERAL.test(d)) return false;
  if (!d.includes(".")) return true;
  return /\.(invalid|test|example|localhost|local|localdomain)$/.test(d) || /(^|\.)example\.(com|net|org)$/.test(d);
}

/** The Message-ID right-hand side: the configured domain, else the sender's. */
export function messageIdDomain(settings: { EMAIL_FROM: string; EMAIL_MESSAGE_ID_DOMAIN?: string | undefined }): string {
  if (settings.EMAIL_MESSAGE_ID_DOMAIN) return settings.EMAIL_MESSAGE_ID_DOMAIN;
  const parsed = parseSender(settings.EMAIL_FROM);
  // loadConfig refuses an EMAIL_FROM without a usable domain, so this only guards direct callers.
  if ("problem" in parsed) throw new Error(`EMAIL_FROM ${parsed.problem}`);
  return parsed.sender.domain;
}

/**
 * What an operator should hear at start when mail goes to a real SMTP
 * server: a sender at a placeholder domain is refused or sent to spam by
 * receivers (no SPF, no DMARC, no MX to answer bounces), and alerts sent to
 * a placeholder address reach nobody. Each warning names its setting.
 * With no SMTP_URL mail goes to the local sink, where the defaults are right.
 */
export function senderWarnings(settings: { SMTP_URL?: string | undefined; EMAIL_FROM: string; INTERNAL_TEAM_EMAIL: string }): string[] {
  if (!settings.SMTP_URL) return [];
  const warnings: string[] = [];
  const parsed = parseSender(settings.EMAIL_FROM);
  if ("sender" in parsed && isPlaceholderDomain(parsed.sender.domain)) {
    warnings.push(
      `EMAIL_FROM is ${JSON.stringify(settings.EMAIL_FROM)}: mail from ${parsed.sender.domain}, a domain that does not exist on the internet, ` +
        "is refused or filtered as spam by most receivers, and Message-IDs end in it; set EMAIL_FROM to an address at your own domain",
    );
  }
  const team = settings.INTERNAL_TEAM_EMAIL;
  const teamDomain = team.slice(team.lastIndexOf("@") + 1);
  if (isPlaceholderDomain(teamDomain)) {
    warnings.push(
      `INTERNAL_TEAM_EMAIL is ${JSON.stringify(team)}: alerts about failed notifications go to a domain that does not exist and reach nobody; ` +
        "set INTERNAL_TEAM_EMAIL to an address someone reads",
    );
  }
  return warnings;
}

/**
 * A stable RFC 5322 Message-ID for an email operation: a resend after a
 * crash carries the same one (it is stored in the SendEmailOp when the
 * operation is prepared). The right-hand side is a domain tidings sends for
 * (the sender's, or EMAIL_MESSAGE_ID_DOMAIN: messageIdDomain above), as RFC
 * 5322 3.6.4 asks, so ids stay unique across installations and receivers
 * that check it see a real domain.
 */
export function messageIdFor(operationId: string, domain: string): string {
  return `<${operationId.replace(/[^A-Za-z0-9.-]/g, ".")}@${domain}>`;
}
