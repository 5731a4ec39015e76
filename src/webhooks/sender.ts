import http from "node:http";
import https from "node:https";
import { isIP } from "node:net";
import { ExternalError } from "../errors/errors";
import { isNonPublicAddress, policyLookup, RefusedAddressError, type AddressPolicy } from "./address";

export interface WebhookRequest {
  url: string;
  headers: Record<string, string>;
  body: string;
}

export interface WebhookResponse {
  status: number;
  /** The start of the answer's body, for the handling history. */
  body: string;
}

/** Bytes of an answer's body kept (an endpoint's error page can be large; a few lines say what went wrong). */
const KEPT_BODY_BYTES = 512;

export interface WebhookSenderSettings extends AddressPolicy {
  /** WEBHOOK_TIMEOUT_MS: a delivery that has no answer by then failed (transiently). */
  timeoutMs: number;
}

/**
 * POSTs one webhook and classifies the outcome like the channels do
 * (docs/webhooks.md, "Retries"): 2xx delivered; 5xx, 408, 429, a timeout or
 * a network error transient; any other answer (4xx, a redirect: redirects are
 * not followed) permanent. 429 or 503 with Retry-After asks to come back
 * later, which is not a failure. node:http rather than fetch, so the address
 * DNS answers is checked before the connection is made (address.ts).
 */
export function postWebhook(request: WebhookRequest, settings: WebhookSenderSettings, signal?: AbortSignal): Promise<WebhookResponse> {
  const url = new URL(request.url);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (!settings.allowPrivateAddresses && isIP(host) && isNonPublicAddress(host)) {
    return Promise.reject(classify(new RefusedAddressError(host, host)));
  }
  const client = url.protocol === "https:" ? https : http;
  return new Promise<WebhookResponse>((resolve, reject) => {
    // One deadline for the whole exchange, not only for an idle socket: an
    // endpoint that trickles its answer a byte at a time is cut off too.
    const deadline = setTimeout(() => req.destroy(Object.assign(new Error(`no answer within ${settings.timeoutMs} ms`), { code: "ETIMEDOUT" })), settings.timeoutMs);
    let settled = false;
    const settle = (outcome: { ok: WebhookResponse } | { error: Error }) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if ("ok" in outcome) resolve(outcome.ok);
      else reject(outcome.error);
    };
    const req = client.request(
      url,
      {
        method: "POST",
        headers: { ...request.headers, "content-type": "application/json", "content-length": Buffer.byteLength(request.body), "user-agent": "tidings-webhooks/1" },
        lookup: policyLookup(settings),
        ...(signal ? { signal } : {}),
      },
      (res) => {
        const status = res.statusCode ?? 0;
        const chunks: Buffer[] = [];
        let kept = 0;
        // The answer's body matters only as the start of an error message: read that much, then let go.
        const finish = () => {
          const body = Buffer.concat(chunks).toString("utf8").slice(0, KEPT_BODY_BYTES);
          if (status >= 200 && status < 300) settle({ ok: { status, body } });
          else settle({ error: httpFailure(status, body, res.headers["retry-after"]) });
        };
        res.on("data", (chunk: Buffer) => {
          chunks.push(chunk);
          kept += chunk.length;
          if (kept >= KEPT_BODY_BYTES) {
            finish();
            res.destroy();
          }
        });
        res.on("error", (error) => settle({ error: classify(error) }));
        res.on("end", finish);
      },
    );
    req.on("error", (error) => settle({ error: classify(error) }));
    req.end(request.body);
  });
}

/** Retry-After in seconds or as an HTTP date, in ms; undefined when absent or unreadable. */
export function retryAfterMs(header: string | undefined, now = Date.now()): number | undefined {
  if (!header) return undefined;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1_000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** An answer other than 2xx, classified. */
export function httpFailure(status: number, body: string, retryAfter?: string | string[]): ExternalError {
  const transient = status >= 500 || status === 408 || status === 429;
  const after = status === 429 || status === 503 ? retryAfterMs(Array.isArray(retryAfter) ? retryAfter[0] : retryAfter) : undefined;
  const text = body.replace(/\s+/g, " ").trim().slice(0, 200);
  return new ExternalError(
    `endpoint answered HTTP ${status}${text ? `: ${text}` : ""}`,
    transient,
    { httpStatus: status, classification: transient ? "transient" : "permanent", ...(status >= 300 && status < 400 ? { note: "redirects are not followed" } : {}) },
    after,
  );
}

/** A failure before any answer: a refused address is permanent, anything else (refused, reset, timeout, DNS) transient. */
function classify(error: Error): ExternalError {
  if (error instanceof ExternalError) return error;
  const code = (error as { code?: unknown }).code;
  const permanent = error instanceof RefusedAddressError;
  return new ExternalError(
    error.message || String(code),
    !permanent,
    { httpStatus: null, code: typeof code === "string" ? code : null, classification: permanent ? "permanent" : "transient" },
    undefined,
    {
      cause: error,
    },
  );
}
