import { BlockList, isIP } from "node:net";
import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { ValidationError } from "../errors/errors";

/**
 * Where webhooks may be sent (docs/webhooks.md, "Endpoint addresses and
 * SSRF"). A webhook makes tidings send requests to an address a client chose,
 * from inside the network tidings runs in; unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES
 * is true, an address in a loopback, private, link-local (cloud metadata at
 * 169.254.169.254), shared, multicast or reserved range is refused: at
 * registration when the URL names one, and at every delivery after DNS has
 * answered (the connection uses the address that was checked, so a name that
 * resolves elsewhere later cannot slip through).
 */
const NOT_PUBLIC = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["127.0.0.0", 8],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
] as const) {
  NOT_PUBLIC.addSubnet(net, prefix, "ipv4");
}
for (const [net, prefix] of [
  ["::", 128],
  ["::1", 128],
  ["64:ff9b::", 96],
  ["100::", 64],
  ["2001:db8::", 32],
  ["fc00::", 7],
  ["fe80::", 10],
  ["ff00::", 8],
] as const) {
  NOT_PUBLIC.addSubnet(net, prefix, "ipv6");
}

/** Whether an IP address is outside the public internet (an IPv4-mapped IPv6 address is judged by its IPv4 part). */
export function isNonPublicAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return NOT_PUBLIC.check(mapped[1]!, "ipv4");
  const family = isIP(address);
  if (family === 4) return NOT_PUBLIC.check(address, "ipv4");
  if (family === 6) return NOT_PUBLIC.check(address, "ipv6");
  return false;
}

export interface AddressPolicy {
  /** WEBHOOK_ALLOW_PRIVATE_ADDRESSES: deliver to loopback and private networks too (tests, an internal receiver). */
  allowPrivateAddresses: boolean;
}

/** A registration's URL, checked: http(s) only, no credentials in it, and no private host unless allowed. Returns it normalised. */
export function checkEndpointUrl(text: string, policy: AddressPolicy): string {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw ValidationError.fromIssues("body", [{ path: "url", message: "must be an absolute http or https URL" }]);
  }
  const refuse = (message: string) => ValidationError.fromIssues("body", [{ path: "url", message }]);
  if (url.protocol !== "http:" && url.protocol !== "https:") throw refuse(`must be an http or https URL (got ${url.protocol.replace(/:$/, "")})`);
  if (url.username || url.password) throw refuse("must not hold credentials (user:password@): they would be stored and shown in the audit");
  if (url.hash) throw refuse("must not hold a fragment (#...)");
  if (!policy.allowPrivateAddresses) {
    const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
    if (host === "localhost" || host.endsWith(".localhost") || isNonPublicAddress(host)) {
      throw refuse(`names a loopback or private address (${host}); tidings delivers to public addresses only unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true`);
    }
  }
  return url.toString();
}

/** Raised by the delivery's DNS lookup for an address the policy refuses: a permanent failure. */
export class RefusedAddressError extends Error {
  readonly code = "EREFUSEDADDRESS";
  constructor(host: string, address: string) {
    super(`${host} resolves to ${address}, a loopback or private address: not delivered (WEBHOOK_ALLOW_PRIVATE_ADDRESSES is false)`);
    this.name = "RefusedAddressError";
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** The `lookup` of a delivery's connection: DNS as usual, then the policy on every address it answered. */
export function policyLookup(policy: AddressPolicy) {
  return (hostname: string, options: { all?: boolean }, callback: LookupCallback): void => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, "");
      const list = addresses;
      if (!policy.allowPrivateAddresses) {
        const bad = list.find((a) => isNonPublicAddress(a.address));
        if (bad) return callback(new RefusedAddressError(hostname, bad.address), "");
      }
      if (options.all) return callback(null, list);
      const first = list[0]!;
      callback(null, first.address, first.family);
    });
  };
}
