import { webApi } from "@slack/bolt";
import { ExternalError } from "../../src/errors/errors";
import { classifySlackError } from "../../src/slack/client";

/**
 * The error objects below are built with the SDK's own classes, filled the
 * way WebClient fills them (node_modules/@slack/web-api/dist/WebClient.js):
 * platform errors carry the parsed body, HTTP errors the status and headers,
 * request errors the fetch failure with its system error as cause.
 */

function platformError(error: string, responseMetadata: Record<string, unknown> = {}) {
  return new webApi.WebAPIPlatformError({ ok: false, error, response_metadata: responseMetadata });
}

function fetchFailure(code: string, message: string) {
  const system = Object.assign(new Error(message), { code, errno: -111, syscall: "connect", address: "127.0.0.1", port: 9 });
  return new webApi.WebAPIRequestError(new TypeError("fetch failed", { cause: system }));
}

describe("classifySlackError", () => {
  it("rate limited (429 with Retry-After) → transient, retry after the given seconds", () => {
    const e = classifySlackError(new webApi.WebAPIRateLimitedError(30));
    expect(e).toBeInstanceOf(ExternalError);
    expect(e.transient).toBe(true);
    expect(e.retryAfterMs).toBe(30_000);
    expect(e.details).toMatchObject({ slackError: "ratelimited", httpStatus: 429, sdkCode: webApi.ErrorCode.RateLimitedError });
    expect(e.message).toMatch(/rate-limited.*30 s/);
  });

  it("platform error ratelimited → transient, with Retry-After from response metadata", () => {
    const e = classifySlackError(platformError("ratelimited", { retryAfter: 2 }));
    expect(e.transient).toBe(true);
    expect(e.retryAfterMs).toBe(2_000);
    expect(e.details).toMatchObject({ slackError: "ratelimited", httpStatus: 200 });
  });

  it("a 429 whose Retry-After the SDK could not read → transient, runner's backoff", () => {
    // What WebClient throws (after p-retry unwraps its AbortError) for a 429 without a usable header.
    const e = classifySlackError(new Error("Retry header did not contain a valid timeout (url: https://slack.com/api/chat.postMessage, retry-after header: null)"));
    expect(e.transient).toBe(true);
    expect(e.retryAfterMs).toBeUndefined();
    expect(e.details).toMatchObject({ slackError: "ratelimited", httpStatus: 429 });
  });

  it.each([
    "channel_not_found",
    "not_in_channel",
    "invalid_auth",
    "account_inactive",
    "is_archived",
    "msg_too_long",
    "no_text",
    "token_revoked",
    "missing_scope",
    "restricted_action",
    "some_future_error_code",
  ])("platform error %s → permanent, code kept", (code) => {
    const e = classifySlackError(platformError(code));
    expect(e.transient).toBe(false);
    expect(e.retryAfterMs).toBeUndefined();
    expect(e.details).toMatchObject({ slackError: code, httpStatus: 200, sdkCode: webApi.ErrorCode.PlatformError });
    expect(e.message).toBe(`Slack refused chat.postMessage: ${code}`);
    expect(e.cause).toBeInstanceOf(webApi.WebAPIPlatformError);
  });

  it.each(["internal_error", "fatal_error", "service_unavailable", "request_timeout"])("platform error %s → transient", (code) => {
    const e = classifySlackError(platformError(code));
    expect(e.transient).toBe(true);
    expect(e.details).toMatchObject({ slackError: code, httpStatus: 200 });
  });

  it("keeps Slack's explanatory messages from the response metadata", () => {
    const e = classifySlackError(platformError("invalid_arguments", { messages: ["[ERROR] missing required field: channel"] }));
    expect(e.transient).toBe(false);
    expect(e.details.slackMessages).toEqual(["[ERROR] missing required field: channel"]);
  });

  it.each([500, 502, 503, 504])("HTTP %i → transient with the status kept", (status) => {
    const e = classifySlackError(new webApi.WebAPIHTTPError(status, "Bad Gateway", { "content-type": "text/html" }, "<html>oops</html>"));
    expect(e.transient).toBe(true);
    expect(e.details).toMatchObject({ slackError: null, httpStatus: status, sdkCode: webApi.ErrorCode.HTTPError });
  });

  it("HTTP 503 with Retry-After → transient after that delay", () => {
    const e = classifySlackError(new webApi.WebAPIHTTPError(503, "Service Unavailable", { "retry-after": "5" }, ""));
    expect(e.transient).toBe(true);
    expect(e.retryAfterMs).toBe(5_000);
  });

  it("HTTP 4xx other than 408/429 → permanent, Slack's error code from a JSON body kept", () => {
    const e = classifySlackError(new webApi.WebAPIHTTPError(400, "Bad Request", {}, '{"ok":false,"error":"invalid_form_data"}'));
    expect(e.transient).toBe(false);
    expect(e.details).toMatchObject({ slackError: "invalid_form_data", httpStatus: 400 });
    expect(e.message).toBe("Slack answered HTTP 400 Bad Request (invalid_form_data)");
  });

  it.each([
    ["ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:9"],
    ["ECONNRESET", "read ECONNRESET"],
    ["ETIMEDOUT", "connect ETIMEDOUT 1.2.3.4:443"],
    ["EAI_AGAIN", "getaddrinfo EAI_AGAIN slack.com"],
  ])("network error %s → transient, code kept", (code, message) => {
    const e = classifySlackError(fetchFailure(code, message));
    expect(e.transient).toBe(true);
    expect(e.details).toMatchObject({ slackError: null, httpStatus: null, networkCode: code, sdkCode: webApi.ErrorCode.RequestError });
    expect(e.message).toContain(message);
  });

  it("a request timeout (AbortSignal.timeout) → transient", () => {
    const timeout = new DOMException("The operation was aborted due to timeout", "TimeoutError");
    const e = classifySlackError(new webApi.WebAPIRequestError(timeout));
    expect(e.transient).toBe(true);
    expect(e.message).toBe("Slack did not answer in time");
    expect(e.details).toMatchObject({ networkCode: "TIMEOUT", httpStatus: null });
  });

  it("a bare system error outside the SDK → transient", () => {
    const e = classifySlackError(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:1"), { code: "ECONNREFUSED" }));
    expect(e.transient).toBe(true);
    expect(e.details).toMatchObject({ networkCode: "ECONNREFUSED" });
  });

  it("an ExternalError passes through unchanged", () => {
    const original = new ExternalError("already classified", false, { slackError: "x", httpStatus: 200 });
    expect(classifySlackError(original)).toBe(original);
  });

  it("anything else → transient (bounded by the runner's maxAttempts)", () => {
    const e = classifySlackError(new Error("EACCES: permission denied, open '/x/slack.jsonl'"));
    expect(e.transient).toBe(true);
    expect(e.details).toMatchObject({ slackError: null, httpStatus: null });
    expect(classifySlackError("a string").message).toBe("a string");
  });
});
