import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import path from "node:path";
import { promisify } from "node:util";
import { SCOPES, createApiKey, revokeApiKey, type Scope } from "../../src/auth/apiKeys";
import { enqueueNotification } from "../../src/notification/enqueue";
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { createEntity } from "../helpers/tidings";

let t: TestDatabase;
let api: TestApi;
const keys = {} as Record<Scope, string>;
let notificationId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  // Notifications are for entities that exist: enqueue refuses any other.
  await createEntity(t, "ada");
  api = await startApi(t);
  for (const scope of SCOPES) keys[scope] = await apiKey(t, [scope]);
  notificationId = (await enqueueNotification(t.db, { entityId: "ada", subject: "s", text: "t" })).trackingId;
  await api.call("PUT", "/v1/entities/ada", {
    key: keys.admin,
    body: { kind: "user", name: "Ada", email: "ada@example.com", preferences: { channels: ["email"] } },
  });
});
afterAll(async () => {
  await api.close();
  await t.close();
});

interface Endpoint {
  method: string;
  path: () => string;
  body?: unknown;
  scope: Scope;
  /** The status a key with the right scope gets. */
  ok: number[];
}

const endpoints: Endpoint[] = [
  { method: "POST", path: () => "/v1/notifications", body: { entityId: "ada", subject: "s", text: "t" }, scope: "producer", ok: [202] },
  { method: "GET", path: () => "/v1/notifications", scope: "reader", ok: [200] },
  { method: "GET", path: () => `/v1/notifications/${notificationId}`, scope: "reader", ok: [200] },
  { method: "GET", path: () => `/v1/notifications/${notificationId}/events`, scope: "reader", ok: [200] },
  { method: "GET", path: () => "/v1/events", scope: "reader", ok: [200] },
  {
    method: "PUT",
    path: () => "/v1/entities/bea",
    body: { kind: "team", name: "Bea", slack: "#bea", preferences: { channels: ["slack"] } },
    scope: "entities",
    ok: [200, 201],
  },
  { method: "GET", path: () => "/v1/entities/ada", scope: "entities", ok: [200] },
  { method: "GET", path: () => "/v1/entities/ada/history", scope: "entities", ok: [200] },
];

const cases = endpoints.flatMap((e) => SCOPES.map((scope) => ({ ...e, keyScope: scope, allowed: scope === e.scope || scope === "admin" })));

describe("scopes: each endpoint allows its scope and admin, and refuses the others", () => {
  it.each(cases.map((c) => [`${c.method} ${c.path()}`.replace(/[0-9a-f-]{36}/, ":id"), c.keyScope, c.allowed ? "allowed" : "refused", c] as const))(
    "%s with a %s key: %s",
    async (_label, _scope, _verdict, c) => {
      const answer = await api.call(c.method, c.path(), { key: keys[c.keyScope], body: c.body });
      if (c.allowed) {
        expect(c.ok).toContain(answer.status);
      } else {
        expect(answer.status).toBe(403);
        expect(answer.contentType).toMatch(/^application\/problem\+json/);
        expect(answer.json).toMatchObject({ type: "urn:tidings:problem:forbidden", requiredScope: c.scope });
        expect(answer.json.detail).toContain(`needs the "${c.scope}" (or "admin") scope; the API key has: ${c.keyScope}`);
        expect(answer.headers.get("www-authenticate")).toContain(`error="insufficient_scope", scope="${c.scope}"`);
      }
    },
  );

  it("a key with several scopes may use each of them", async () => {
    const both = await apiKey(t, ["producer", "reader"]);
    const posted = await api.call("POST", "/v1/notifications", { key: both, body: { entityId: "ada", subject: "s", text: "t" } });
    expect(posted.status).toBe(202);
    expect((await api.call("GET", `/v1/notifications/${posted.json.id}`, { key: both })).status).toBe(200);
    expect((await api.call("GET", "/v1/entities/ada", { key: both })).status).toBe(403);
  });
});

describe("authentication", () => {
  it.each(endpoints.map((e) => [e.method, e.path().replace(/[0-9a-f-]{36}/, ":id"), e] as const))("%s %s without a key: 401", async (_m, _p, e) => {
    const answer = await api.call(e.method, e.path(), { body: e.body });
    expect(answer.status).toBe(401);
    expect(answer.json).toMatchObject({ type: "urn:tidings:problem:unauthorized", detail: expect.stringMatching(/Authorization: Bearer/) });
    expect(answer.headers.get("www-authenticate")).toBe('Bearer realm="tidings"');
  });

  it("an unknown key, a malformed header and Basic auth: 401", async () => {
    const forged = `tdk_${"A".repeat(43)}`;
    expect((await api.call("GET", "/v1/events", { key: forged })).json.detail).toBe("the API key is not valid");
    expect((await api.call("GET", "/v1/events", { key: "short" })).status).toBe(401);
    const basic = await api.call("GET", "/v1/events", { headers: { authorization: `Basic ${Buffer.from("a:b").toString("base64")}` } });
    expect(basic.status).toBe(401);
    expect(basic.json.detail).toMatch(/must be `Bearer <API key>`/);
  });

  it("a revoked key is refused from the next request on", async () => {
    const key = await createApiKey(t.db, { name: "soon-revoked", scopes: ["reader"], createdBy: "test" });
    expect((await api.call("GET", "/v1/events", { key: key.secret })).status).toBe(200);
    await revokeApiKey(t.db, key.keyId, "leaked in a log");
    const answer = await api.call("GET", "/v1/events", { key: key.secret });
    expect(answer.status).toBe(401);
    expect(answer.json.detail).toBe("this API key has been revoked");
    await expect(revokeApiKey(t.db, key.keyId, "again")).rejects.toThrow(/already revoked at .*: leaked in a log/);
  });

  it("health, readiness, metrics and the OpenAPI document need no key", async () => {
    for (const p of ["/healthz", "/readyz", "/metrics", "/openapi.json"]) {
      expect([p, (await api.call("GET", p)).status]).toEqual([p, 200]);
    }
  });

  it("stores keys hashed: no secret appears in the database, only its SHA-256", async () => {
    const { rows } = await t.query<{ row: string; hash: Buffer }>("select row_to_json(k)::text as row, secret_sha256 as hash from api.keys k");
    expect(rows.length).toBeGreaterThanOrEqual(SCOPES.length);
    const everything = rows.map((r) => r.row).join("\n");
    const idempotency = (await t.query("select coalesce(string_agg(row_to_json(i)::text, ''), '') as all from api.idempotency_keys i")).rows[0].all;
    for (const secret of Object.values(keys)) {
      expect(everything).not.toContain(secret);
      expect(everything).not.toContain(secret.slice(4));
      expect(idempotency).not.toContain(secret);
      const hash = createHash("sha256").update(secret).digest();
      expect(rows.filter((r) => r.hash.equals(hash))).toHaveLength(1);
    }
  });
});

describe("scripts/apikeys.ts", () => {
  const run = promisify(execFile);
  const root = path.resolve(__dirname, "../..");
  const cli = (...args: string[]) =>
    run(process.execPath, ["--import", "tsx", "scripts/apikeys.ts", ...args], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: t.url, LOG_LEVEL: "warn" },
    });

  it("creates a key (secret printed once), lists it without the secret, revokes it", async () => {
    const created = await cli("create", "--name", "billing-service", "--scopes", "producer,reader");
    const secret = /secret: (tdk_\S+)/.exec(created.stdout)?.[1];
    const id = /created API key ([0-9a-f-]{36})/.exec(created.stdout)?.[1];
    expect(secret).toBeDefined();
    expect(created.stdout).toContain("shown only this once");
    expect((await api.call("GET", "/v1/events", { key: secret })).status).toBe(200);

    const listed = await cli("list", "--json");
    const entry = JSON.parse(listed.stdout).find((k: { id: string }) => k.id === id);
    expect(entry).toMatchObject({ name: "billing-service", scopes: ["producer", "reader"], hint: `tdk_…${secret!.slice(-4)}`, revokedAt: null });
    expect(listed.stdout).not.toContain(secret);
    const table = await cli("list");
    expect(table.stdout).toContain("billing-service");
    expect(table.stdout).not.toContain(secret);

    const revoked = await cli("revoke", id!, "--reason", "rotated");
    expect(revoked.stdout).toMatch(new RegExp(`revoked API key ${id} \\(billing-service\\) at .*: rotated`));
    expect((await api.call("GET", "/v1/events", { key: secret })).status).toBe(401);
  }, 60_000);

  it("refuses bad input with a message naming it", async () => {
    await expect(cli("create", "--name", "x", "--scopes", "producer,superuser")).rejects.toMatchObject({
      stderr: expect.stringContaining('unknown scope "superuser"'),
    });
    await expect(cli("revoke", "not-an-id", "--reason", "r")).rejects.toMatchObject({
      code: 2,
      stderr: expect.stringContaining('"not-an-id" is not an API key id'),
    });
    await expect(cli("revoke", "00000000-0000-4000-8000-000000000000")).rejects.toMatchObject({
      stderr: expect.stringContaining("required option '--reason <reason>'"),
    });
    const help = await cli("--help");
    expect(help.stdout).toMatch(/create \[options\][\s\S]*list \[options\][\s\S]*revoke \[options\] <id>/);
  }, 60_000);
});
