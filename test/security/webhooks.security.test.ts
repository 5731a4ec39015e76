/**
 * The webhook streams' promises (migrations/0007_webhooks.sql), each attacked
 * by the role that must be refused:
 * - a signing secret is written once, by the endpoint admin, and read by the
 *   webhook bot alone: not by the admin itself, a reader, an auditor, a
 *   client, another bot or the service login; nobody changes or removes one;
 * - only the webhook bot writes deliveries (a forged delivery would make
 *   tidings POST where the forger likes), only the admin and the bot write
 *   endpoints, and neither stream is changed or removed;
 * - an auditor sees endpoints and deliveries through the audit views only,
 *   which hold no secret.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { registerEndpoint } from "../../src/webhooks/endpoint.repository";
import { appendOne } from "../../src/streams/append";
import { WebhookStreams } from "../../src/webhooks/webhook.streams";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

let t: TestDatabase;
let endpointId: string;
let secret: string;
beforeAll(async () => {
  t = await createTestDatabase(4);
  ({
    endpoint: { id: endpointId },
    secret,
  } = await registerEndpoint(t.db, { url: "https://hooks.example.com/tidings" }, "test", { allowPrivateAddresses: false }));
});
afterAll(async () => {
  await t?.close();
});

const run = (actor: string | null, statement: string) => inTransaction(t.db, actor, (tx) => sql.raw(statement).execute(tx));

const OTHER_ACTORS = [
  "client",
  "notification_bot",
  "saga_bot",
  "reaction_bot",
  "internal_operation_bot",
  "projection_bot",
  "email_bot",
  "slack_bot",
  "entity_admin",
  "reader",
  "auditor",
];

const delivery = {
  id: "n-1",
  type: "DeliverWebhookOp",
  payload: { endpointId: "wh_x", url: "http://169.254.169.254/latest/meta-data", messageId: "msg_x", eventType: "notification.sent", notificationId: "n-1", body: "{}" },
};

describe("webhook signing secrets", () => {
  it("the webhook bot reads them", async () => {
    const { rows } = await run("webhook_bot", `select secret from webhook.signing_secrets where endpoint_id = '${endpointId}'`);
    expect(rows).toEqual([{ secret }]);
  });

  it("the admin who writes them, every other actor and the service login by itself are refused reading them", async () => {
    for (const actor of ["webhook_admin", ...OTHER_ACTORS, null]) {
      await expect(run(actor, "select secret from webhook.signing_secrets")).rejects.toThrow(/permission denied/);
    }
  });

  it("nobody changes, removes or truncates one, the bot and the admin included", async () => {
    for (const actor of ["webhook_bot", "webhook_admin", "operator"]) {
      await expect(run(actor, `update webhook.signing_secrets set secret = 'whsec_${"A".repeat(43)}='`)).rejects.toThrow(/permission denied|append-only/);
      await expect(run(actor, "delete from webhook.signing_secrets")).rejects.toThrow(/permission denied|append-only/);
      await expect(run(actor, "truncate webhook.signing_secrets")).rejects.toThrow(/permission denied|append-only/);
    }
    // Not even a superuser, short of disabling the trigger (the owner's power).
    await expect(t.query(`update webhook.signing_secrets set secret = 'whsec_${"A".repeat(43)}='`)).rejects.toThrow(/append-only/);
  });

  it("a second secret for an endpoint is refused, and only the admin writes one", async () => {
    await expect(run("webhook_admin", `insert into webhook.signing_secrets (endpoint_id, secret) values ('${endpointId}', 'whsec_${"B".repeat(43)}=')`)).rejects.toThrow(
      /duplicate key/,
    );
    for (const actor of ["webhook_bot", ...OTHER_ACTORS]) {
      await expect(run(actor, `insert into webhook.signing_secrets (endpoint_id, secret) values ('wh_forged', 'whsec_${"B".repeat(43)}=')`)).rejects.toThrow(/permission denied/);
    }
  });

  it("a SQL login granted tidings_client or tidings_auditor cannot read them", async () => {
    for (const grant of ["tidings_client", "tidings_auditor"]) {
      const login = await t.createLogin({ prefix: "whk", grants: [grant] });
      await expect(login.pool.query("select * from webhook.signing_secrets")).rejects.toThrow(/permission denied/);
    }
  });
});

describe("webhook streams", () => {
  it("only the webhook bot appends deliveries", async () => {
    for (const actor of ["webhook_admin", ...OTHER_ACTORS]) {
      await expect(inTransaction(t.db, actor, (tx) => appendOne(tx, WebhookStreams.deliveries, delivery))).rejects.toThrow(/permission denied|may not|does not produce/);
    }
    await expect(inTransaction(t.db, "webhook_bot", (tx) => appendOne(tx, WebhookStreams.deliveries, delivery))).resolves.toMatchObject({ written: true });
  });

  it("only the admin and the webhook bot append endpoint records", async () => {
    const removal = { id: endpointId, type: "WebhookEndpointRemovedEvent", payload: { removedBy: "forger" } };
    for (const actor of OTHER_ACTORS) {
      await expect(inTransaction(t.db, actor, (tx) => appendOne(tx, WebhookStreams.endpoints, removal))).rejects.toThrow(/permission denied|may not|does not produce/);
    }
  });

  it("the webhook bot appends only a disabling to the endpoints: not a registration (a forged URL) nor a removal (a client's deliveries stopped)", async () => {
    const forged = [
      {
        id: "wh_forgedbybot",
        type: "WebhookEndpointRegisteredEvent",
        payload: { url: "http://169.254.169.254/latest/meta-data", events: null, description: null, registeredBy: "webhook_bot" },
      },
      { id: endpointId, type: "WebhookEndpointRemovedEvent", payload: { removedBy: "webhook_bot" } },
    ];
    for (const record of forged) {
      await expect(inTransaction(t.db, "webhook_bot", (tx) => appendOne(tx, WebhookStreams.endpoints, record))).rejects.toThrow(
        `the webhook bot may append only WebhookEndpointDisabledEvent to webhook.endpoints, not ${record.type}`,
      );
    }
    // The same through the engine's SQL append, and by a plain INSERT.
    await expect(
      run(
        "webhook_bot",
        `select * from tidings.append('webhook.endpoints', '[{"id": "${endpointId}", "type": "WebhookEndpointRemovedEvent", "payload": {"removedBy": "x"}}]'::jsonb)`,
      ),
    ).rejects.toThrow(/may append only WebhookEndpointDisabledEvent/);
    await expect(
      run("webhook_bot", `insert into webhook.endpoints (id, type, payload) values ('${endpointId}', 'WebhookEndpointRemovedEvent', '{"removedBy": "x"}')`),
    ).rejects.toThrow(/may append only WebhookEndpointDisabledEvent/);
    const { rows } = await t.query("select type from webhook.endpoints where id in ($1, 'wh_forgedbybot') order by position", [endpointId]);
    expect(rows.map((r) => r.type)).toEqual(["WebhookEndpointRegisteredEvent"]);

    // What it is there for still works, and the admin still registers and removes.
    const disabled = { id: endpointId, type: "WebhookEndpointDisabledEvent", payload: { reason: "kept failing", failedDeliveries: [] } };
    await expect(inTransaction(t.db, "webhook_bot", (tx) => appendOne(tx, WebhookStreams.endpoints, disabled))).resolves.toMatchObject({ written: true });
    const removal = { id: endpointId, type: "WebhookEndpointRemovedEvent", payload: { removedBy: "admin" } };
    await expect(inTransaction(t.db, "webhook_admin", (tx) => appendOne(tx, WebhookStreams.endpoints, removal))).resolves.toMatchObject({ written: true });
  });

  it("neither stream is changed or removed, by its own producers or the operator", async () => {
    for (const [actor, table] of [
      ["webhook_bot", "webhook.deliveries"],
      ["webhook_bot", "webhook.endpoints"],
      ["webhook_admin", "webhook.endpoints"],
      ["operator", "webhook.deliveries"],
    ] as const) {
      await expect(run(actor, `update ${table} set payload = '{}'`)).rejects.toThrow(/permission denied|append-only/);
      await expect(run(actor, `delete from ${table}`)).rejects.toThrow(/permission denied|append-only/);
    }
  });

  it("readers and clients read neither stream; the auditor reads them through the audit views only, with no secret in them", async () => {
    for (const actor of ["reader", "client", "auditor"]) {
      await expect(run(actor, "select * from webhook.endpoints")).rejects.toThrow(/permission denied/);
      await expect(run(actor, "select * from webhook.deliveries")).rejects.toThrow(/permission denied/);
    }
    const auditor = await t.createLogin({ prefix: "whaud", grants: ["tidings_auditor"] });
    const endpoints = await auditor.pool.query("select * from audit.webhook_endpoints");
    expect(endpoints.rows.map((r) => r.endpoint_id)).toContain(endpointId);
    expect(JSON.stringify(endpoints.rows)).not.toContain("whsec_");
    await expect(auditor.pool.query("select * from audit.webhook_deliveries")).resolves.toBeDefined();
    await expect(auditor.pool.query("select * from webhook.endpoints")).rejects.toThrow(/permission denied/);
  });
});
