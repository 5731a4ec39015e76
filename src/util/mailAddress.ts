import { domainToASCII } from "node:url";
import addressparser from "nodemailer/lib/addressparser";

/**
 * Mail addresses as configuration and the email channel read them: one
 * sender address and its domain. Kept below every subsystem (configuration
 * checks EMAIL_FROM with it before any email code runs).
 */

export interface Sender {
  /** `local@domain` as written. */
  address: string;
  /** The domain, in ASCII (punycode) and lower case: what a Message-ID's right-hand side can carry. */
  domain: string;
}

/** A domain literal (`[192.0.2.1]`) is kept as written: RFC 5322 allows it on a Message-ID's right-hand side too. */
const DOMAIN_LITERAL = /^\[[\x21-\x5a\x5e-\x7e]+\]$/;
const HOSTNAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** A domain as a Message-ID carries it: ASCII, lower case, no trailing dot; null when it is not a host name. */
export function asciiDomain(domain: string): string | null {
  if (DOMAIN_LITERAL.test(domain)) return domain;
  const ascii = domainToASCII(domain.replace(/\.$/, "")).toLowerCase();
  return HOSTNAME.test(ascii) ? ascii : null;
}

/** EMAIL_FROM's one address and its domain, or why it is not one usable sender. */
export function parseSender(from: string): { sender: Sender } | { problem: string } {
  const addresses = addressparser(from, { flatten: true });
  if (addresses.length !== 1) return { problem: "must be one address, e.g. Notifications <notify@example.com>" };
  const address = addresses[0]!.address;
  const at = address.lastIndexOf("@");
  if (at <= 0 || at === address.length - 1) return { problem: "must be an address of the form name@domain, e.g. notify@example.com" };
  const domain = asciiDomain(address.slice(at + 1));
  if (domain === null) return { problem: `must be an address at a valid domain (got domain "${address.slice(at + 1)}")` };
  return { sender: { address, domain } };
}
