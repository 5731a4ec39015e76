import { allBots } from "../../src/composition";
import { startWorker } from "../../src/bots/worker";
import { createMetrics } from "../../src/http/metrics";
import { waitFor } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { startTidings, type Tidings } from "../helpers/tidings";
import { testLogger } from "../helpers/worker";

let app: Tidings;
let api: TestApi;
const keys = { producer: "", reader: "", entities: "" };

beforeAll(async () => {
  app = await startTidings({ autoStart: false });
  const metrics = createMetrics();
  // The real worker, wired to the API's metrics the way src/main.ts wires them.
  app.worker = await startWorker({
    pool: app.t.pool,
    db: app.t.db,
    bots: allBots(),
    runtime: {
      db: app.t.db,
      deps: app.deps,
      logger: testLogger,
      settings: { maxAttempts: 3, retryBaseMs: 50, retryMaxMs: 1_000 },
      onHandled: metrics.onHandled,
    },
    settings: { concurrency: 8, pollIntervalMs: 100, leaseMs: 30_000 },
    logger: testLogger,
  });
  api = await startApi(app.t, { metrics });
  keys.producer = await apiKey(app.t, ["producer"]);
  keys.reader = await apiKey(app.t, ["reader"]);
  keys.entities = await apiKey(app.t, ["entities"]);
});
afterAll(async () => {
  await api.close();
  await app.stop();
});

const SUBJECT = "Your order has shipped";
const body = { entityId: "ada", subject: SUBJECT, text: "It is on its way.", tags: { order: "1001" } };
const toAda = () => app.smtp.messages.filter((m) => m.to.includes("ada@example.com") && m.subject === SUBJECT);

async function untilSettled(id: string) {
  return waitFor(
    async () => {
      const answer = await api.call("GET", `/v1/notifications/${id}`, { key: keys.reader });
      return ["sent", "partially_sent", "failed"].includes(answer.json.status) ? answer.json : undefined;
    },
    { timeoutMs: 20_000, what: `notification ${id} to settle` },
  );
}

describe("the API end to end, with real workers, SMTP server and Slack stand-in", () => {
  let id: string;

  it("PUT an entity, POST a notification, GET it until sent, read its records and the feed", async () => {
    const entity = await api.call("PUT", "/v1/entities/ada", {
      key: keys.entities,
      body: { kind: "user", name: "Ada Lovelace", email: "ada@example.com", slack: "U0ADA0001", preferences: { channels: ["email", "slack"] } },
    });
    expect(entity.status).toBe(201);

    const posted = await api.call("POST", "/v1/notifications", { key: keys.producer, body, headers: { "idempotency-key": "order-1001-shipped" } });
    expect(posted.status).toBe(202);
    id = posted.json.id;

    const view = await untilSettled(id);
    expect(view).toMatchObject({
      id,
      status: "sent",
      entity: { id: "ada", name: "Ada Lovelace" },
      subject: SUBJECT,
      tags: { order: "1001" },
      channels: [
        { channel: "email", destination: "ada@example.com", status: "sent", attempts: 1 },
        { channel: "slack", destination: "U0ADA0001", status: "sent", attempts: 1 },
      ],
    });
    expect(toAda()).toHaveLength(1);
    expect(app.slack.posts.filter((p) => p.requestedChannel === "U0ADA0001")).toHaveLength(1);

    const records = (await api.call("GET", `/v1/notifications/${id}/events`, { key: keys.reader })).json.records as {
      stream: string;
      type: string;
      handling: { concern: string; status: string; history: unknown[] }[];
    }[];
    const kinds = records.map((r) => `${r.stream} ${r.type}`);
    expect(kinds[0]).toBe("notification.client_operations SendNotificationToEntityOp");
    expect(kinds).toEqual(
      expect.arrayContaining([
        "notification.events SendNotificationRequestedEvent",
        "notification.events PreparedToSendOnAllChannelsEvent",
        "notification.sagas NotificationSaga",
        "email.operations SendEmailOp",
        "email.events SucceededInSendingEmailEvent",
        "slack.operations SendSlackMessageOp",
        "slack.events SucceededInSendingSlackMessageEvent",
        "notification.events SentOnAllPreparedChannelsEvent",
      ]),
    );
    const emailOp = records.find((r) => r.type === "SendEmailOp")!;
    expect(emailOp.handling).toEqual([expect.objectContaining({ concern: "email_bot", status: "Completed" })]);
    expect(emailOp.handling[0]!.history.length).toBeGreaterThanOrEqual(2);

    // The feed carries the notification's events in the order they were recorded.
    const feedTypes = await waitFor(
      async () => {
        const page = (await api.call("GET", "/v1/events?limit=1000", { key: keys.reader })).json;
        const mine = page.events.filter((e: { id: string }) => e.id === id).map((e: { type: string }) => e.type);
        return mine.includes("SentOnAllPreparedChannelsEvent") ? mine : undefined;
      },
      { what: "the outcome in the feed" },
    );
    expect(feedTypes).toEqual(["SendNotificationRequestedEvent", "PreparedToSendOnAllChannelsEvent", "SentOnAllPreparedChannelsEvent"]);
  });

  it("the same Idempotency-Key and body answers the same id and sends no second email", async () => {
    const again = await api.call("POST", "/v1/notifications", { key: keys.producer, body, headers: { "idempotency-key": "order-1001-shipped" } });
    expect(again.status).toBe(202);
    expect(again.json.id).toBe(id);
    expect(again.headers.get("idempotent-replayed")).toBe("true");

    // A later notification to the same person passes through the same queue:
    // once it is delivered, a duplicate of the first would have been too.
    const later = await api.call("POST", "/v1/notifications", { key: keys.producer, body: { ...body, subject: "A later message" } });
    await untilSettled(later.json.id);
    expect(toAda()).toHaveLength(1);
    const { rows } = await app.t.query("select count(*)::int as n from email.operations where id = $1", [id]);
    expect(rows[0].n).toBe(1);
  });

  it("the same Idempotency-Key with a changed body is refused with 422", async () => {
    const changed = await api.call("POST", "/v1/notifications", {
      key: keys.producer,
      body: { ...body, text: "It is on its way (updated)." },
      headers: { "idempotency-key": "order-1001-shipped" },
    });
    expect(changed.status).toBe(422);
    expect(changed.json).toMatchObject({ type: "urn:tidings:problem:idempotency-key-reused", notificationId: id });
  });

  it("/metrics reflects the flow: enqueues, sends per channel, handling latency per task", async () => {
    const text = (await api.call("GET", "/metrics")).text;
    const value = (series: string) =>
      Number(
        text
          .split("\n")
          .find((l) => l.startsWith(`${series} `))
          ?.slice(series.length + 1),
      );
    expect(value("tidings_notifications_enqueued_total")).toBe(2);
    expect(value('tidings_channel_sends_total{channel="email",outcome="sent"}')).toBe(2);
    expect(value('tidings_channel_sends_total{channel="slack",outcome="sent"}')).toBe(2);
    expect(value('tidings_job_handling_seconds_count{task="notification.client_operations:notification_bot",outcome="completed"}')).toBe(2);
  });
});
