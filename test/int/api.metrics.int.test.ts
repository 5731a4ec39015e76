import { inTransaction } from "../../src/db/database";
import { claim, transition } from "../../src/streams/handling";
import { Streams } from "../../src/notification/streams";
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { createEntity } from "../helpers/tidings";

let t: TestDatabase;
let api: TestApi;
let producer: string;

beforeAll(async () => {
  t = await createTestDatabase();
  // Notifications are for entities that exist: enqueue refuses any other.
  await createEntity(t, "ada");
  api = await startApi(t);
  producer = await apiKey(t, ["producer"]);
});
afterAll(async () => {
  await api.close();
  await t.close();
});

async function scrape(): Promise<string> {
  const answer = await api.call("GET", "/metrics");
  expect(answer.status).toBe(200);
  expect(answer.contentType).toMatch(/^text\/plain/);
  return answer.text;
}

/** The value of one sample, e.g. metric('tidings_jobs_waiting{task="x",due="now"}'). */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("GET /metrics", () => {
  it("counts enqueued notifications (not idempotent replays) and the jobs waiting for them", async () => {
    const before = await scrape();
    expect(sample(before, "tidings_notifications_enqueued_total")).toBe(0);
    expect(sample(before, "tidings_metrics_database_up")).toBe(1);

    const body = { entityId: "ada", subject: "s", text: "t" };
    for (let i = 0; i < 2; i++) {
      await api.call("POST", "/v1/notifications", { key: producer, body, headers: { "idempotency-key": "metrics-1" } });
    }
    await api.call("POST", "/v1/notifications", { key: producer, body });
    const after = await scrape();
    expect(sample(after, "tidings_notifications_enqueued_total")).toBe(2);
    // No worker runs in this test: both jobs wait.
    expect(sample(after, 'tidings_jobs_waiting{task="notification.client_operations:notification_bot",due="now"}')).toBe(2);
  });

  it("reports records whose handling failed, per stream and concern", async () => {
    const { rows } = await t.query("select position from notification.client_operations order by position limit 1");
    const target = { stream: Streams.notificationClientOperations, position: rows[0].position as number, concern: "notification_bot" };
    await inTransaction(t.db, "notification_bot", async (tx) => {
      await claim(tx, target, { actor: "notification_bot" });
      await transition(tx, target, "fail", { actor: "notification_bot", reason: "test failure", error: "boom" });
    });
    const text = await scrape();
    expect(sample(text, 'tidings_failed_records{stream="notification.client_operations",concern="notification_bot"}')).toBe(1);
    expect(sample(text, 'tidings_failed_records{stream="email.operations",concern="email_bot"}')).toBe(0);
  });

  it("reports sends per channel and handling latency per task from the runner's hook", async () => {
    api.metrics.onHandled({ task: "email.operations:email_bot", stream: Streams.emailOperations, concern: "email_bot", outcome: "completed", durationMs: 120 });
    api.metrics.onHandled({ task: "slack.operations:slack_bot", stream: Streams.slackOperations, concern: "slack_bot", outcome: "failed", durationMs: 30 });
    api.metrics.onHandled({ task: "slack.operations:slack_bot", stream: Streams.slackOperations, concern: "slack_bot", outcome: "retrying", durationMs: 30 });
    const text = await scrape();
    expect(sample(text, 'tidings_channel_sends_total{channel="email",outcome="sent"}')).toBe(1);
    expect(sample(text, 'tidings_channel_sends_total{channel="email",outcome="failed"}')).toBe(0);
    expect(sample(text, 'tidings_channel_sends_total{channel="slack",outcome="failed"}')).toBe(1);
    expect(sample(text, 'tidings_job_handling_seconds_count{task="email.operations:email_bot",outcome="completed"}')).toBe(1);
    expect(sample(text, 'tidings_job_handling_seconds_sum{task="email.operations:email_bot",outcome="completed"}')).toBeCloseTo(0.12);
    expect(sample(text, 'tidings_job_handling_seconds_bucket{le="0.25",task="email.operations:email_bot",outcome="completed"}')).toBe(1);
    expect(sample(text, 'tidings_job_handling_seconds_count{task="slack.operations:slack_bot",outcome="retrying"}')).toBe(1);
  });
});

describe("GET /openapi.json", () => {
  it("describes every endpoint, its scope, its parameters and the strict request bodies", async () => {
    const answer = await api.call("GET", "/openapi.json");
    expect(answer.status).toBe(200);
    const doc = answer.json;
    expect(doc.openapi).toBe("3.1.0");
    const operations = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([p, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${p}`));
    expect(operations.sort()).toEqual(
      [
        "POST /v1/notifications",
        "GET /v1/notifications",
        "GET /v1/notifications/{id}",
        "GET /v1/notifications/{id}/events",
        "GET /v1/events",
        "PUT /v1/entities/{id}",
        "GET /v1/entities/{id}",
        "GET /v1/entities/{id}/history",
        "GET /v1/entities",
        "PATCH /v1/entities/{id}",
        "POST /v1/webhooks",
        "GET /v1/webhooks",
        "GET /v1/webhooks/{id}",
        "DELETE /v1/webhooks/{id}",
        "GET /v1/events/stream",
        "GET /v1/admin/failures",
        "POST /v1/admin/actions/{verb}",
        "POST /v1/admin/resend",
        "GET /v1/health",
        "GET /v1/me",
        "GET /v1/templates",
        "PUT /v1/templates/{key}",
        "GET /v1/templates/{key}",
        "GET /v1/templates/{key}/versions/{n}",
        "POST /v1/templates/{key}/preview",
        "POST /v1/notifications/{id}/cancel",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
        "GET /openapi.json",
      ].sort(),
    );
    expect(doc.components.securitySchemes.apiKey).toMatchObject({ type: "http", scheme: "bearer" });
    expect(doc.paths["/v1/notifications"].post.security).toEqual([{ apiKey: ["producer"] }]);
    expect(doc.paths["/v1/events"].get.security).toEqual([{ apiKey: ["reader"] }]);
    expect(doc.paths["/v1/entities/{id}"].put.security).toEqual([{ apiKey: ["entities"] }]);
    expect(doc.paths["/v1/webhooks"].post.security).toEqual([{ apiKey: ["admin"] }]);
    expect(doc.paths["/healthz"].get.security).toBeUndefined();

    const send = doc.components.schemas.SendNotificationRequest;
    // Which fields go together (entityId or entityIds; subject and text, or template) is checked at run time and described; every field is documented.
    expect(Object.keys(send.properties)).toEqual(
      expect.arrayContaining(["entityId", "entityIds", "subject", "text", "html", "markdown", "template", "data", "channels", "tags", "category", "sendAt", "delay"]),
    );
    expect(Object.keys(send.properties)).not.toContain("idempotencyKey");
    expect(send.additionalProperties).toBe(false);
    expect(doc.paths["/v1/notifications"].post.parameters).toEqual(expect.arrayContaining([expect.objectContaining({ in: "header", name: "Idempotency-Key", required: false })]));
    expect(doc.paths["/v1/notifications"].post.responses["422"].content["application/problem+json"].schema).toEqual({ $ref: "#/components/schemas/Problem" });
    const feedParams = doc.paths["/v1/events"].get.parameters.map((p: { name: string; in: string }) => `${p.in}:${p.name}`);
    expect(feedParams).toEqual(["query:after", "query:limit", "query:wait"]);
    expect(doc.components.schemas.EntityInput.properties.preferences).toBeDefined();
  });
});
