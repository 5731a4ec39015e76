import http from "node:http";
import type { AddressInfo } from "node:net";
import { ExternalError, ValidationError } from "../../src/errors/errors";
import { mergePatch } from "../../src/entities/entity.repository";
import { expectedVersion } from "../../src/http/entities";
import { checkEndpointUrl, isNonPublicAddress } from "../../src/webhooks/address";
import { webhookMessageId, webhookMessageOf } from "../../src/webhooks/messages";
import { httpFailure, postWebhook, retryAfterMs } from "../../src/webhooks/sender";
import type { StreamRecord } from "../../src/streams/interfaces";

const record = (stream: string, type: string, payload: unknown, position = 7): StreamRecord => ({
  stream,
  position,
  id: "n-1",
  type,
  payload,
  tags: {},
  causedBy: null,
  recordedAt: new Date("2026-12-05T10:00:00Z"),
  recordedBy: "x",
  txId: "1",
  feedKey: "1",
});

describe("webhook addresses (SSRF)", () => {
  it.each([
    ["127.0.0.1", true],
    ["10.0.0.8", true],
    ["172.20.1.1", true],
    ["192.168.1.1", true],
    ["169.254.169.254", true],
    ["100.64.0.1", true],
    ["0.0.0.0", true],
    ["::1", true],
    ["fd00::1", true],
    ["fe80::1", true],
    ["::ffff:127.0.0.1", true],
    ["::ffff:10.0.0.1", true],
    ["93.184.216.34", false],
    ["2606:4700::1111", false],
    ["::ffff:93.184.216.34", false],
  ])("%s is non-public: %s", (address, expected) => {
    expect(isNonPublicAddress(address)).toBe(expected);
  });

  it("registration takes http(s) only, without credentials, and public hosts unless allowed", () => {
    const strict = { allowPrivateAddresses: false };
    expect(checkEndpointUrl("https://hooks.example.com/x?a=1", strict)).toBe("https://hooks.example.com/x?a=1");
    for (const url of [
      "ftp://a.example/x",
      "gopher://a.example",
      "https://u:p@a.example/",
      "https://a.example/#x",
      "http://localhost:3000",
      "http://app.localhost",
      "http://[::1]/",
      "http://127.1/",
    ]) {
      expect(() => checkEndpointUrl(url, strict)).toThrow(ValidationError);
    }
    expect(checkEndpointUrl("http://127.0.0.1:8080/x", { allowPrivateAddresses: true })).toBe("http://127.0.0.1:8080/x");
  });

  it("a delivery to a non-public address is refused for good, before any connection, whether named by IP or resolved by DNS", async () => {
    const strict = { allowPrivateAddresses: false, timeoutMs: 1_000 };
    for (const url of ["http://127.0.0.1:9/x", "http://localhost:9/x"]) {
      const error = await postWebhook({ url, headers: {}, body: "{}" }, strict).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ExternalError);
      expect({ url, transient: (error as ExternalError).transient, message: (error as Error).message }).toEqual({
        url,
        transient: false,
        message: expect.stringContaining("loopback or private"),
      });
    }
  });
});

describe("webhook answers, classified", () => {
  it.each([
    [500, true],
    [502, true],
    [503, true],
    [408, true],
    [429, true],
    [400, false],
    [401, false],
    [404, false],
    [410, false],
    [301, false],
  ])("HTTP %s is transient: %s", (status, transient) => {
    expect(httpFailure(status, "").transient).toBe(transient);
  });

  it("429 and 503 with Retry-After ask to come back later; other statuses ignore it", () => {
    expect(httpFailure(429, "", "30").retryAfterMs).toBe(30_000);
    expect(httpFailure(503, "", "2").retryAfterMs).toBe(2_000);
    expect(httpFailure(500, "", "2").retryAfterMs).toBeUndefined();
    expect(retryAfterMs(new Date(61_000).toUTCString(), 1_000)).toBe(60_000);
    expect(retryAfterMs("soon")).toBeUndefined();
  });

  it("an endpoint that holds its answer past WEBHOOK_TIMEOUT_MS fails transiently", async () => {
    // The receiver never answers until closed: the timeout lands by construction.
    const held: http.ServerResponse[] = [];
    const server = http.createServer((_req, res) => held.push(res));
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
      const error = await postWebhook({ url, headers: {}, body: "{}" }, { allowPrivateAddresses: true, timeoutMs: 200 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ExternalError);
      expect((error as ExternalError).transient).toBe(true);
      expect((error as Error).message).toContain("no answer within 200 ms");
    } finally {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it("an endpoint that answers 500 and then trickles its body is cut off at the deadline, failing transiently", async () => {
    // Headers and one byte, then nothing until closed: by construction.
    const held: http.ServerResponse[] = [];
    const server = http.createServer((_req, res) => {
      res.writeHead(500, { "content-type": "text/plain" });
      res.write("x");
      held.push(res);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
      const error = await postWebhook({ url, headers: {}, body: "{}" }, { allowPrivateAddresses: true, timeoutMs: 200 }).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ExternalError);
      expect((error as ExternalError).transient).toBe(true);
      expect((error as Error).message).toBe("no answer within 200 ms");
    } finally {
      for (const res of held) res.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe("what a record reports to webhooks", () => {
  it("maps requests, channel outcomes and notification outcomes; internal alerts report nothing", () => {
    expect(webhookMessageOf(record("notification.events", "SendNotificationRequestedEvent", { entityId: "ada", subject: "Hi", tags: {} }))).toMatchObject({
      type: "notification.requested",
      data: { notificationId: "n-1", entityId: "ada", subject: "Hi" },
    });
    expect(webhookMessageOf(record("email.events", "SucceededInSendingEmailEvent", { operationId: "n-1:email", attempt: 1 }))).toMatchObject({
      type: "notification.channel.sent",
      data: { channel: "email", operationId: "n-1:email" },
    });
    expect(webhookMessageOf(record("slack.events", "SendSlackMessageAttemptFailedEvent", { operationId: "n-1:slack", attempt: 1, error: "boom", retryInMs: 5_000 }))).toMatchObject(
      {
        type: "notification.channel.retrying",
        data: { channel: "slack", retryInMs: 5_000, nextAttemptAt: "2026-12-05T10:00:05.000Z" },
      },
    );
    expect(
      webhookMessageOf(record("email.events", "FailedToSendEmailEvent", { operationId: "n-1:email", attempt: 3, error: "550", classification: "permanent", reason: "permanent" }))
        ?.type,
    ).toBe("notification.channel.failed");
    expect(webhookMessageOf(record("notification.events", "SentOnSomePreparedChannelsEvent", { sent: ["email"], failed: ["slack"] }))?.type).toBe("notification.partially_sent");
    expect(webhookMessageOf(record("notification.events", "AudienceOptedOutOfAllChannelsEvent", { optedOut: ["email"] }))?.type).toBe("notification.not_sent");
    expect(webhookMessageOf(record("notification.events", "NotificationCancelledEvent", { cancelledBy: "key ops", sendAt: "2026-12-06T09:00:00.000Z" }))).toMatchObject({
      type: "notification.cancelled",
      data: { outcome: "NotificationCancelledEvent", cancelledBy: "key ops", sendAt: "2026-12-06T09:00:00.000Z" },
    });
    expect(webhookMessageOf(record("email.events", "SucceededInSendingEmailEvent", { operationId: "n-1:alert-9:email", attempt: 1 }))).toBeNull();
    expect(webhookMessageOf(record("email.events", "SendEmailRequestedEvent", { operationId: "n-1:email", attempt: 1 }))).toBeNull();
    expect(webhookMessageOf(record("notification.events", "PreparedToSendOnAllChannelsEvent", {}))).toBeNull();
  });

  it("a message's webhook-id is fixed by the record it reports", () => {
    expect(webhookMessageId({ stream: "email.events", position: 7 })).toBe(webhookMessageId({ stream: "email.events", position: 7 }));
    expect(webhookMessageId({ stream: "email.events", position: 7 })).not.toBe(webhookMessageId({ stream: "slack.events", position: 7 }));
    expect(webhookMessageId({ stream: "email.events", position: 7 })).toMatch(/^msg_[A-Za-z0-9_-]+$/);
  });
});

describe("entity PATCH and If-Match rules", () => {
  it("merges as RFC 7396 says", () => {
    expect(mergePatch({ a: 1, b: { c: 2, d: 3 } }, { b: { c: null, e: 4 }, f: [1] })).toEqual({ a: 1, b: { d: 3, e: 4 }, f: [1] });
    expect(mergePatch({ a: [1, 2] }, { a: [3] })).toEqual({ a: [3] });
    expect(mergePatch({ a: 1 }, { a: null })).toEqual({});
  });

  it("reads If-Match: *, strong tags, and never a weak one", () => {
    expect(expectedVersion(undefined)).toBeUndefined();
    expect(expectedVersion("*")).toBe("any");
    expect(expectedVersion('"3"')).toEqual([3]);
    expect(expectedVersion('"3", "4"')).toEqual([3, 4]);
    expect(expectedVersion('W/"3"')).toEqual([]);
    expect(expectedVersion("3")).toEqual([]);
  });
});
