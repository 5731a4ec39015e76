import { readFileSync } from "node:fs";
import path from "node:path";
import { sql } from "kysely";
import { Webhook } from "standardwebhooks";
import { runAction } from "../../src/admin/redrive";
import { asAuditor } from "../../src/audit/queries";
import { apiKey, countEverything, startApi, type TestApi } from "../helpers/api";
import { waitFor } from "../helpers/db";
import { person, waitForOutcome, type Tidings } from "../helpers/tidings";
import { startTidingsWithWebhooks, startWebhookReceiver, type WebhookReceiver } from "../helpers/webhookReceiver";

/**
 * Status webhooks end to end: HTTP in, SMTP and the Slack stand-in out, and
 * a webhook receiver on loopback that verifies every delivery with the
 * standardwebhooks package, as a client would.
 */
let tidings: Tidings;
let api: TestApi;
let admin: string;
const receivers: WebhookReceiver[] = [];

async function receiver(answer?: (n: number) => number): Promise<WebhookReceiver> {
  const r = await startWebhookReceiver(answer);
  receivers.push(r);
  return r;
}

async function register(url: string, events?: string[]): Promise<{ id: string; secret: string }> {
  const res = await api.call("POST", "/v1/webhooks", { key: admin, body: { url, ...(events ? { events } : {}) } });
  expect(res.status).toBe(201);
  return res.json;
}

async function notify(entityId: string, subject = "Report ready"): Promise<string> {
  const res = await api.call("POST", "/v1/notifications", { key: admin, body: { entityId, subject, text: "Hello." } });
  expect(res.status).toBe(202);
  return res.json.id;
}

/** The webhook queries of docs/audit.md (`<!-- webhook-query: name -->` and a fenced sql block), run as the auditor. */
async function auditQuery(name: string, replace: [string, string] | null = null): Promise<any[]> {
  const page = readFileSync(path.resolve(__dirname, "../../docs/audit.md"), "utf8");
  const match = new RegExp(`<!-- webhook-query: ${name} -->\\s*\`\`\`sql\\n([\\s\\S]*?)\`\`\``).exec(page);
  if (!match) throw new Error(`docs/audit.md has no webhook query ${name}`);
  const text = replace ? match[1]!.split(replace[0]).join(replace[1]) : match[1]!;
  return asAuditor(tidings.t.db, async (tx) => (await sql.raw<any>(text).execute(tx)).rows);
}

async function deliveries(endpointId: string) {
  return (await tidings.t.query("select * from audit.webhook_deliveries where endpoint_id = $1 order by position", [endpointId])).rows;
}

beforeAll(async () => {
  ({ tidings, api, adminKey: admin } = await startTidingsWithWebhooks({ webhooks: { disableAfter: 2 }, webhookRetrySchedule: [300, 300, 300] }));
  const entity = await api.call("PUT", "/v1/entities/ada", { key: admin, body: person({ name: "Ada", email: "ada@example.com" }) });
  expect(entity.status).toBe(201);
});

afterAll(async () => {
  await api?.close();
  await tidings?.stop();
  for (const r of receivers) await r.close();
});

describe("registering endpoints", () => {
  it("answers the signing secret once, and lists endpoints without it", async () => {
    const r = await receiver();
    const res = await api.call("POST", "/v1/webhooks", { key: admin, body: { url: r.url, events: ["notification.sent"], description: "ops" } });
    expect(res.status).toBe(201);
    expect(res.json).toMatchObject({ url: r.url, events: ["notification.sent"], status: "active", description: "ops" });
    expect(res.json.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(res.headers.get("location")).toBe(`/v1/webhooks/${res.json.id}`);

    const one = await api.call("GET", `/v1/webhooks/${res.json.id}`, { key: admin });
    expect(one.status).toBe(200);
    expect(one.json.secret).toBeUndefined();
    const list = await api.call("GET", "/v1/webhooks?limit=100", { key: admin });
    expect(list.json.items.map((e: { id: string }) => e.id)).toContain(res.json.id);
    expect(list.text).not.toContain("whsec_");

    expect((await api.call("DELETE", `/v1/webhooks/${res.json.id}`, { key: admin })).status).toBe(204);
    expect((await api.call("GET", `/v1/webhooks/${res.json.id}`, { key: admin })).status).toBe(404);
    expect((await api.call("DELETE", `/v1/webhooks/${res.json.id}`, { key: admin })).status).toBe(404);
    const after = await api.call("GET", "/v1/webhooks?limit=100", { key: admin });
    expect(after.json.items.map((e: { id: string }) => e.id)).not.toContain(res.json.id);
  });

  it("pages the list with after/next", async () => {
    const made: string[] = [];
    for (let i = 0; i < 3; i++) made.push((await register(`http://127.0.0.1:9/page-${i}`, ["notification.sent"])).id);
    const seen: string[] = [];
    let after: string | null = null;
    do {
      const page: { json: { items: Array<{ id: string }>; next: string | null } } = await api.call("GET", `/v1/webhooks?limit=2${after ? `&after=${after}` : ""}`, { key: admin });
      seen.push(...page.json.items.map((e) => e.id));
      after = page.json.next;
    } while (after);
    expect(seen.filter((id) => made.includes(id))).toEqual(made);
    for (const id of made) await api.call("DELETE", `/v1/webhooks/${id}`, { key: admin });
    expect((await api.call("GET", "/v1/webhooks?after=bogus", { key: admin })).status).toBe(400);
  });

  it("refuses a URL that is not http(s), an unknown event type, and a key without the admin scope, storing nothing", async () => {
    const before = await countEverything(tidings.t);
    for (const url of ["ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "not a url", "http://user:pw@example.com/"]) {
      const res = await api.call("POST", "/v1/webhooks", { key: admin, body: { url } });
      expect({ url, status: res.status, path: res.json.errors?.[0]?.path }).toEqual({ url, status: 400, path: "url" });
    }
    const badEvent = await api.call("POST", "/v1/webhooks", { key: admin, body: { url: "https://example.com/x", events: ["email.opened"] } });
    expect(badEvent.status).toBe(400);
    const reader = await apiKey(tidings.t, ["reader", "producer", "entities"]);
    expect((await api.call("POST", "/v1/webhooks", { key: reader, body: { url: "https://example.com/x" } })).status).toBe(403);
    expect((await api.call("GET", "/v1/webhooks", { key: reader })).status).toBe(403);
    expect(await countEverything(tidings.t)).toEqual(before);
  });

  it("refuses loopback, private and metadata addresses unless WEBHOOK_ALLOW_PRIVATE_ADDRESSES", async () => {
    const strict = await startApi(tidings.t);
    try {
      for (const url of [
        "http://127.0.0.1:8080/x",
        "http://localhost/x",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/x",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",
      ]) {
        const res = await strict.call("POST", "/v1/webhooks", { key: admin, body: { url } });
        expect({ url, status: res.status, detail: res.json.detail }).toEqual({ url, status: 400, detail: expect.stringContaining("WEBHOOK_ALLOW_PRIVATE_ADDRESSES") });
      }
      const ok = await strict.call("POST", "/v1/webhooks", { key: admin, body: { url: "https://hooks.example.com/x", events: ["notification.sent"] } });
      expect(ok.status).toBe(201);
      await strict.call("DELETE", `/v1/webhooks/${ok.json.id}`, { key: admin });
    } finally {
      await strict.close();
    }
  });
});

describe("deliveries", () => {
  it("delivers every status change of a notification, signed (Standard Webhooks), in order; a receiver that fails twice gets the retry", async () => {
    // 503 to the first two requests (the notification's first change), then 204: by construction, not timing.
    const r = await receiver((n) => (n <= 2 ? 503 : 204));
    const { id: endpointId, secret } = await register(r.url);
    const id = await notify("ada");
    await waitForOutcome(tidings.t, id);
    await waitFor(async () => r.delivered().some((b) => b.type === "notification.sent"), { what: "the notification.sent webhook" });

    // Every request verifies with the secret, by the package clients use.
    const verifier = new Webhook(secret);
    for (const req of r.received) {
      expect(() => verifier.verify(req.body, req.headers)).not.toThrow();
      expect(req.headers["webhook-id"]).toMatch(/^msg_/);
    }
    // A tampered body or another secret does not verify.
    const first = r.received[0]!;
    expect(() => verifier.verify(first.body.replace("ada", "eve"), first.headers)).toThrow();
    expect(() => new Webhook("whsec_" + Buffer.alloc(32, 7).toString("base64")).verify(first.body, first.headers)).toThrow();

    // The first request failed twice and was retried with the same webhook-id; then the rest, in the order they happened.
    expect(r.received.slice(0, 3).map((q) => [q.answered, JSON.parse(q.body).type])).toEqual([
      [503, "notification.requested"],
      [503, "notification.requested"],
      [204, "notification.requested"],
    ]);
    expect(new Set(r.received.slice(0, 3).map((q) => q.headers["webhook-id"])).size).toBe(1);
    const types = r.delivered().map((b) => b.type);
    expect(types[0]).toBe("notification.requested");
    expect(types.at(-1)).toBe("notification.sent");
    expect(types.filter((t) => t === "notification.channel.sent")).toHaveLength(2);
    expect(r.delivered().every((b) => b.data.notificationId === id)).toBe(true);
    expect(r.delivered().find((b) => b.type === "notification.sent")!.data).toMatchObject({ sent: expect.arrayContaining(["email", "slack"]) });

    // Each delivery is a record with handling state; the retried one holds every attempt.
    const rows = await waitFor(async () => {
      const all = await deliveries(endpointId);
      return all.length === types.length && all.every((d) => d.status === "Completed") ? all : null;
    });
    expect(rows[0]).toMatchObject({ notification_id: id, event_type: "notification.requested", status: "Completed", attempts: 3 });
    const history = await tidings.t.query("select action, to_status from audit.handling_changes where stream = 'webhook.deliveries' and position = $1 order by entry", [
      rows[0].position,
    ]);
    expect(history.rows.map((h) => h.action)).toEqual(["claim", "fail", "reset_failed", "claim", "fail", "reset_failed", "claim", "complete"]);
    // The later ones only waited their turn (in order per notification): waiting is no failure.
    const waited = await tidings.t.query("select distinct action from audit.handling_changes where stream = 'webhook.deliveries' and position = any($1::bigint[])", [
      rows.slice(1).map((d) => d.position),
    ]);
    expect(waited.rows.map((h) => h.action)).not.toContain("fail");
  });

  it("a scheduled notification cancelled before its time ends, for the endpoint, with notification.cancelled", async () => {
    const r = await receiver();
    await register(r.url);
    const sendAt = new Date(Date.now() + 3_600_000).toISOString();
    const res = await api.call("POST", "/v1/notifications", { key: admin, body: { entityId: "ada", subject: "Later", text: "Hello.", sendAt } });
    expect(res.status).toBe(202);
    const id = res.json.id as string;
    expect((await api.call("POST", `/v1/notifications/${id}/cancel`, { key: admin })).status).toBe(200);
    const cancelled = await waitFor(async () => r.delivered().find((b) => b.data.notificationId === id && b.type === "notification.cancelled"), {
      what: "the notification.cancelled webhook",
    });
    expect(cancelled.data).toMatchObject({ outcome: "NotificationCancelledEvent", sendAt });
    expect(
      r
        .delivered()
        .filter((b) => b.data.notificationId === id)
        .map((b) => b.type),
    ).toEqual(["notification.requested", "notification.cancelled"]);
  });

  it("delivers only the subscribed event types", async () => {
    const r = await receiver();
    await register(r.url, ["notification.sent"]);
    const id = await notify("ada", "Only the outcome");
    await waitFor(async () => r.delivered().length > 0, { what: "a webhook" });
    await waitForOutcome(tidings.t, id);
    await waitFor(async () => (await tidings.t.query("select 1 from audit.webhook_deliveries where notification_id = $1 and status <> 'Completed'", [id])).rowCount === 0);
    expect(
      r
        .delivered()
        .filter((b) => b.data.notificationId === id)
        .map((b) => b.type),
    ).toEqual(["notification.sent"]);
  });

  it("fails a delivery for good on a 4xx, re-drives it, and disables an endpoint after WEBHOOK_DISABLE_AFTER failed deliveries, alerting the internal team", async () => {
    let gone = true;
    const r = await receiver(() => (gone ? 410 : 204));
    const { id: endpointId } = await register(r.url, ["notification.requested"]);

    const first = await notify("ada", "first");
    const [failed] = await waitFor(async () => {
      const rows = await deliveries(endpointId);
      return rows.length === 1 && rows[0].status === "Failed" ? rows : null;
    });
    expect(failed).toMatchObject({ notification_id: first, attempts: 1, last_http_status: 410, last_error: expect.stringContaining("HTTP 410") });
    expect((await tidings.t.query("select 1 from audit.failures_waiting where stream = 'webhook.deliveries' and position = $1", [failed.position])).rowCount).toBe(1);

    // An operator re-drives it once the receiver is back (npm run redrive selects by stream and status).
    gone = false;
    const report = await runAction(
      tidings.t.db,
      "redrive-failed",
      { stream: "webhook.deliveries", status: ["Failed"], notification: first },
      { execute: true, reason: "receiver fixed", actor: "ops" },
    );
    expect(report.changed).toBe(1);
    await waitFor(async () => (await deliveries(endpointId))[0].status === "Completed", { what: "the re-driven delivery" });
    expect(r.delivered().map((b) => b.data.notificationId)).toEqual([first]);

    // Then it fails twice more in a row: disabled, with an alert by email to the internal team.
    gone = true;
    await notify("ada", "second");
    await waitFor(async () => (await deliveries(endpointId)).filter((d) => d.status === "Failed").length === 1);
    await notify("ada", "third");
    const endpoint = await waitFor(
      async () => (await tidings.t.query("select * from audit.webhook_endpoints where endpoint_id = $1 and status = 'disabled'", [endpointId])).rows[0],
      {
        what: "the endpoint disabled",
      },
    );
    expect(endpoint.ended_because).toContain("WEBHOOK_DISABLE_AFTER=2");
    const alert = await waitFor(async () => tidings.smtp.messages.find((m) => m.subject?.includes(endpointId)), { what: "the alert email" });
    expect(alert.to).toEqual(["oncall@example.test"]);
    expect(alert.text).toContain(r.url);
    expect((await api.call("GET", `/v1/webhooks/${endpointId}`, { key: admin })).json).toMatchObject({ status: "disabled" });

    // The audit answers, as the auditor, with the queries docs/audit.md gives.
    expect((await auditQuery("webhook-endpoints-disabled")).map((e) => e.endpoint_id)).toContain(endpointId);
    const failing = await auditQuery("webhook-deliveries-failing");
    expect(failing.filter((d) => d.endpoint_id === endpointId)).toHaveLength(2);
    const attempts = (await auditQuery("webhook-attempts-of-notification", ["4f7c...", first])).filter((a) => a.endpoint_id === endpointId);
    expect(attempts.map((a) => a.action)).toEqual(["claim", "fail", "reset_failed", "claim", "complete"]);
    expect(attempts[2]).toMatchObject({ reason: "receiver fixed" });

    // Nothing more is delivered to it.
    const fourth = await notify("ada", "fourth");
    await waitForOutcome(tidings.t, fourth);
    const requests = r.received.length;
    const later = await notify("ada", "fifth");
    await waitForOutcome(tidings.t, later);
    // The dispatcher has read past both (its checkpoint holds nothing back on any stream it follows): any delivery would be appended by now.
    await waitFor(
      async () => {
        const { rows } = await tidings.t.query<{ streams: number; behind: number }>(
          "select count(*)::int as streams, count(*) filter (where waiting > 0)::int as behind from tidings.read_lag() where reader = 'checkpoint:webhook_dispatch'",
        );
        return rows[0]!.streams === 3 && rows[0]!.behind === 0 ? true : undefined;
      },
      { what: "the webhook dispatcher to read past the fifth notification" },
    );
    expect((await deliveries(endpointId)).map((d) => d.notification_id)).not.toContain(fourth);
    expect((await deliveries(endpointId)).map((d) => d.notification_id)).not.toContain(later);
    expect(r.received.length).toBe(requests);
  });
});
