import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { apiKey, countEverything, startApi, type ApiAnswer, type TestApi } from "../helpers/api";

let t: TestDatabase;
let api: TestApi;
let admin: string;

beforeAll(async () => {
  t = await createTestDatabase();
  api = await startApi(t);
  admin = await apiKey(t, ["admin"]);
});
afterAll(async () => {
  await api.close();
  await t.close();
});

const validNotification = { entityId: "ada", subject: "Hello", text: "Hi there" };
const validEntity = { kind: "user", name: "Ada", email: "ada@example.com", preferences: { channels: ["email"] } };

function expectProblem(answer: ApiAnswer, status: number, type: string, detail: RegExp) {
  expect(answer.contentType).toMatch(/^application\/problem\+json/);
  expect(answer.status).toBe(status);
  expect(answer.json).toMatchObject({ type: `urn:tidings:problem:${type}`, status });
  expect(answer.json.title).toEqual(expect.any(String));
  expect(answer.json.detail).toMatch(detail);
}

describe("bad input gets a problem document naming the problem, and writes nothing", () => {
  let before: Record<string, number>;
  beforeAll(async () => {
    before = await countEverything(t);
  });
  afterAll(async () => {
    // Every request in this block was refused: no stream, no idempotency key, no job changed.
    expect(await countEverything(t)).toEqual(before);
  });

  it("malformed JSON: 400", async () => {
    const answer = await api.call("POST", "/v1/notifications", { key: admin, body: '{"entityId": "ada", "subject": ' });
    expectProblem(answer, 400, "malformed-json", /not valid JSON/);
    expect(answer.json.instance).toBe("/v1/notifications");
  });

  it("a JSON body that is not an object: 400 naming the body", async () => {
    const answer = await api.call("POST", "/v1/notifications", { key: admin, body: "[1, 2]" });
    expectProblem(answer, 400, "validation-failed", /expected object/);
    expect(answer.json.errors).toEqual([{ path: "(body)", message: expect.stringMatching(/expected object/) }]);
  });

  it("wrong Content-Type: 415 naming the type sent", async () => {
    const answer = await api.call("POST", "/v1/notifications", {
      key: admin,
      body: JSON.stringify(validNotification),
      headers: { "content-type": "text/plain" },
    });
    expectProblem(answer, 415, "unsupported-media-type", /Content-Type must be application\/json \(got "text\/plain"\)/);
  });

  it("no body at all: 400", async () => {
    const answer = await api.call("PUT", "/v1/entities/ada", { key: admin });
    expectProblem(answer, 400, "validation-failed", /JSON request body is required/);
  });

  it("unknown fields: 400 naming each, and idempotencyKey pointed to its header", async () => {
    const answer = await api.call("POST", "/v1/notifications", {
      key: admin,
      body: { ...validNotification, colour: "blue", idempotencyKey: "k-1" },
    });
    expectProblem(answer, 400, "validation-failed", /colour: unknown field/);
    expect(answer.json.errors).toEqual(
      expect.arrayContaining([
        { path: "colour", message: "unknown field" },
        { path: "idempotencyKey", message: expect.stringMatching(/Idempotency-Key header/) },
      ]),
    );
    const entity = await api.call("PUT", "/v1/entities/ada", { key: admin, body: { ...validEntity, preferences: { channels: ["email"], colour: 1 } } });
    expect(entity.json.errors).toEqual([{ path: "preferences.colour", message: "unknown field" }]);
  });

  it("a field that does not fit: 400 naming the field and the problem", async () => {
    const answer = await api.call("POST", "/v1/notifications", { key: admin, body: { ...validNotification, channels: ["fax"], subject: "" } });
    expectProblem(answer, 400, "validation-failed", /channels/);
    expect(answer.json.errors.map((e: { path: string }) => e.path).sort()).toEqual(["channels.0", "subject"]);
  });

  it("a body over 256 kB: 413", async () => {
    const answer = await api.call("POST", "/v1/notifications", { key: admin, body: { ...validNotification, text: "x".repeat(300 * 1024) } });
    expectProblem(answer, 413, "payload-too-large", /larger than the limit of 262144 bytes/);
  });

  it("unknown route: 404, whether or not a key is sent", async () => {
    expectProblem(await api.call("GET", "/v1/nothing-here"), 404, "not-found", /no such endpoint: GET \/v1\/nothing-here/);
    expectProblem(await api.call("GET", "/v2/notifications", { key: admin }), 404, "not-found", /no such endpoint/);
  });

  it("wrong method on a known path: 405 with Allow", async () => {
    const answer = await api.call("DELETE", "/v1/notifications", { key: admin });
    expectProblem(answer, 405, "method-not-allowed", /DELETE is not allowed on \/v1\/notifications/);
    expect(answer.headers.get("allow")).toBe("POST, GET, HEAD, OPTIONS");
    const put = await api.call("POST", "/v1/entities/ada", { key: admin, body: validEntity });
    expect(put.status).toBe(405);
    expect(put.headers.get("allow")).toBe("PUT, PATCH, GET, HEAD, OPTIONS");
  });

  it("bad ids: 400 naming the id", async () => {
    const notification = await api.call("GET", "/v1/notifications/not-a-uuid", { key: admin });
    expectProblem(notification, 400, "validation-failed", /id: must be a notification id/);
    expect(notification.json.errors).toEqual([{ path: "id", message: expect.stringMatching(/UUID/) }]);
    expectProblem(await api.call("GET", "/v1/notifications/nope/events", { key: admin }), 400, "validation-failed", /id:/);
    expectProblem(await api.call("PUT", "/v1/entities/-bad", { key: admin, body: validEntity }), 400, "validation-failed", /id: must start with a letter or digit/);
  });

  it("bad cursors and parameters: 400 naming the parameter", async () => {
    expectProblem(await api.call("GET", "/v1/events?after=yesterday", { key: admin }), 400, "validation-failed", /after: invalid feed cursor "yesterday"/);
    expectProblem(await api.call("GET", "/v1/events?limit=0", { key: admin }), 400, "validation-failed", /limit: must be at least 1/);
    expectProblem(await api.call("GET", "/v1/events?wait=31", { key: admin }), 400, "validation-failed", /wait: must be at most 30/);
    expectProblem(await api.call("GET", "/v1/events?after=1-1&after=2-2", { key: admin }), 400, "validation-failed", /after:/);
    expectProblem(await api.call("GET", "/v1/notifications?cursor=abc", { key: admin }), 400, "validation-failed", /cursor: not a cursor this API returned/);
    expectProblem(await api.call("GET", "/v1/notifications?status=lost", { key: admin }), 400, "validation-failed", /status:/);
    expectProblem(await api.call("GET", "/v1/notifications?since=last-week", { key: admin }), 400, "validation-failed", /since: must be an ISO 8601/);
    expectProblem(await api.call("GET", "/v1/notifications?colour=blue", { key: admin }), 400, "validation-failed", /colour: unknown field/);
    expectProblem(await api.call("GET", "/v1/entities/ada/history?at=soon", { key: admin }), 400, "validation-failed", /at:/);
  });

  it("a bad Idempotency-Key header: 400 naming the header", async () => {
    const answer = await api.call("POST", "/v1/notifications", {
      key: admin,
      body: validNotification,
      headers: { "idempotency-key": "x".repeat(256) },
    });
    expectProblem(answer, 400, "validation-failed", /1 to 255 printable ASCII/);
  });

  it("unknown notification and entity: 404", async () => {
    expectProblem(await api.call("GET", "/v1/notifications/00000000-0000-4000-8000-000000000000", { key: admin }), 404, "not-found", /no notification with id/);
    expectProblem(await api.call("GET", "/v1/entities/nobody", { key: admin }), 404, "not-found", /no entity with id "nobody"/);
  });
});

describe("internal errors", () => {
  it("answer 500 without the internals", async () => {
    // A database that is gone: the error text would name the database and the server.
    const gone = await createTestDatabase(2);
    const broken = await startApi(gone);
    const key = await apiKey(gone, ["admin"]);
    await gone.close();
    try {
      const answer = await broken.call("GET", "/v1/events", { key });
      expect(answer.status).toBe(500);
      expect(answer.contentType).toMatch(/^application\/problem\+json/);
      expect(answer.json).toEqual({
        type: "urn:tidings:problem:internal",
        title: "Internal error",
        status: 500,
        detail: expect.stringMatching(/logged under this problem's requestId/),
        instance: "/v1/events",
        requestId: answer.headers.get("x-request-id"),
      });
      expect(answer.text).not.toMatch(/tidings_t_|database|postgres|Error:/i);
    } finally {
      await broken.close();
    }
  });
});
