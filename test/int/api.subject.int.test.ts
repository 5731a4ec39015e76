import { putEntity } from "../../src/entities/entity.repository";
import { apiKey, countEverything, startApi, type TestApi } from "../helpers/api";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

/** A subject becomes an email header: CR or LF in it is refused at the door, never flattened into something else. */

let t: TestDatabase;
let api: TestApi;
let producer: string;

beforeAll(async () => {
  t = await createTestDatabase();
  api = await startApi(t);
  producer = await apiKey(t, ["producer"]);
  // The entity exists, so nothing but the subject can be wrong with these requests.
  await putEntity(t.db, "ada", { kind: "user", name: "Ada", email: "ada@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }, "test");
});
afterAll(async () => {
  await api.close();
  await t.close();
});

it.each([
  ["a header injection", "a\r\nBcc: x@y"],
  ["a bare LF", "first line\nsecond line"],
  ["a bare CR", "first\rsecond"],
  ["a trailing newline", "Your report is ready\n"],
])("POST /v1/notifications with %s in the subject: 400 problem naming subject, nothing stored", async (_label, subject) => {
  const before = await countEverything(t);
  const answer = await api.call("POST", "/v1/notifications", { key: producer, body: { entityId: "ada", subject, text: "Hello." } });
  expect(answer.status).toBe(400);
  expect(answer.contentType).toMatch(/^application\/problem\+json/);
  expect(answer.json).toMatchObject({ type: "urn:tidings:problem:validation-failed", status: 400 });
  expect(answer.json.detail).toMatch(/subject: must be one line \(no CR or LF\)/);
  expect(answer.json.errors).toEqual([{ path: "subject", message: expect.stringMatching(/no CR or LF/) }]);
  expect(await countEverything(t)).toEqual(before);
});

it("a 998-character subject without a space is still accepted (it is encoded for SMTP, not refused)", async () => {
  const answer = await api.call("POST", "/v1/notifications", { key: producer, body: { entityId: "ada", subject: "a".repeat(998), text: "Hello." } });
  expect(answer.status).toBe(202);
});
