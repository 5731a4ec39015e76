import fc from "fast-check";
import { parseSendNotification } from "../../src/notification/enqueue";
import { createTestDatabase, type TestDatabase, type TestLogin } from "../helpers/db";
import { createEntity, person } from "../helpers/tidings";

/**
 * A notification can be enqueued two ways: over HTTP or from TypeScript
 * (validated by the zod schema SendNotificationToEntityOp) and from SQL
 * (notification.send_notification_to_entity, validated in plpgsql so a
 * caller in any language gets the same rules). The rules are written in two
 * languages; this property test holds them to one verdict: for any request,
 * both accept it or both refuse it.
 */
let t: TestDatabase;
let caller: TestLogin;
beforeAll(async () => {
  t = await createTestDatabase(4);
  await createEntity(t, "ada", person());
  caller = await t.createLogin({ prefix: "rules", grants: ["tidings_client"] });
});
afterAll(async () => {
  await caller?.pool.end();
  await t?.close();
});

interface Request {
  entityId: string;
  subject: string;
  text: string;
  html?: string;
  markdown?: string;
  channels?: string[];
  tags?: Record<string, unknown>;
  idempotencyKey?: string;
}

/** The values each field is tried with: valid ones, and ones just past each limit. */
const VALUES: { [K in keyof Request]-?: Array<Request[K]> } = {
  entityId: ["ada", "", "-ada", "ada x", "adé", "a".repeat(200), "a".repeat(201), "ada.b_c:d@e-f"],
  subject: [
    "Hi",
    "",
    "   ",
    " padded ",
    "two\nlines",
    "carriage\rreturn",
    "trailing newline\n",
    "\ttab",
    "\u00a0no-break\u00a0",
    "\u2003em space",
    "x".repeat(998),
    "x".repeat(999),
    ` ${"x".repeat(998)} `,
    "😀".repeat(499),
    "😀".repeat(500),
    "é".repeat(998),
  ],
  text: ["body", "", " ", "y".repeat(100_000), "y".repeat(100_001), "😀".repeat(50_000), "😀".repeat(50_001)],
  html: ["<p>x</p>", "", "h".repeat(500_000), "h".repeat(500_001)],
  markdown: ["*x*", "", "m".repeat(100_000), "m".repeat(100_001)],
  channels: [[], ["email"], ["slack", "email"], ["email", "email"], ["fax"], ["email", "slack", "email"]],
  tags: [
    {},
    { team: "billing" },
    { "bad key": "v" },
    { k: "v".repeat(256) },
    { k: "v".repeat(257) },
    { k: 1 },
    { ["k".repeat(64)]: "v" },
    { ["k".repeat(65)]: "v" },
    Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`t${i}`, "v"])),
    Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`t${i}`, "v"])),
  ],
  idempotencyKey: ["", "k", "k".repeat(255), "k".repeat(256)],
};
const VALID: Request = { entityId: "ada", subject: "Hi", text: "body" };
const FIELDS = Object.keys(VALUES) as Array<keyof Request>;

/** Requests that differ from a valid one in one field: every value of every field. */
const oneFieldOff: Request[] = FIELDS.flatMap((field) => VALUES[field].map((value) => ({ ...VALID, [field]: value })));

/** Any mix of fields, each present or not. */
const request: fc.Arbitrary<Request> = fc.record(Object.fromEntries(FIELDS.map((f) => [f, fc.constantFrom(...VALUES[f])])) as { [K in keyof Request]: fc.Arbitrary<Request[K]> }, {
  requiredKeys: ["entityId", "subject", "text"],
});

type Verdict = { accepted: true; payload: unknown } | { accepted: false; reason: string };

function typescriptVerdict(r: Request): Verdict {
  try {
    return { accepted: true, payload: parseSendNotification(r) };
  } catch (error) {
    return { accepted: false, reason: (error as Error).message };
  }
}

let calls = 0;
/** What the SQL function does with the request: refuses it, or stores this payload (read back, then the caller's transaction is rolled back). */
async function sqlVerdict(r: Request): Promise<Verdict> {
  // A fresh key per call: what a reused key does is another test's (enqueue.int).
  const key = r.idempotencyKey === undefined || r.idempotencyKey === "" ? r.idempotencyKey : `${++calls}`.padEnd(r.idempotencyKey.length, "k");
  const client = await caller.pool.connect();
  try {
    await client.query("begin");
    const { rows } = await client.query<{ id: string }>("select notification.send_notification_to_entity($1, $2, $3, $4, $5, $6, $7, $8) as id", [
      r.entityId,
      r.subject,
      r.text,
      r.html ?? null,
      r.markdown ?? null,
      r.channels ?? null,
      r.tags === undefined ? "{}" : JSON.stringify(r.tags),
      key ?? null,
    ]);
    await client.query("commit");
    const stored = await t.query<{ payload: Record<string, unknown> }>("select payload from notification.client_operations where id = $1", [rows[0]!.id]);
    const { idempotencyKey, ...payload } = stored.rows[0]!.payload;
    return { accepted: true, payload: idempotencyKey === undefined ? payload : { ...payload, idempotencyKey: r.idempotencyKey } };
  } catch (error) {
    await client.query("rollback");
    const { code, message } = error as { code?: string; message: string };
    // An unknown entity is checked after the request's shape, which passed.
    if (code === "TD006") return { accepted: true, payload: "(unknown entity: not stored)" };
    if (code !== "22023") throw error; // only the request's own checks may refuse it here
    return { accepted: false, reason: message };
  } finally {
    client.release();
  }
}

/** Both refuse, or both accept and store the same payload. */
async function expectSameVerdict(r: Request) {
  const ts = typescriptVerdict(r);
  const db = await sqlVerdict(r);
  if (!ts.accepted) {
    expect({ request: r, sql: db }).toEqual({ request: r, sql: { accepted: false, reason: expect.any(String) } });
  } else if (db.accepted && db.payload === "(unknown entity: not stored)") {
    expect(r.entityId).not.toBe(VALID.entityId);
  } else {
    expect({ request: r, sql: db }).toEqual({ request: r, sql: { accepted: true, payload: ts.payload } });
  }
}

test.each(oneFieldOff.map((r) => [JSON.stringify(r).slice(0, 120), r] as const))("one field off, both languages agree: %s", async (_, r) => {
  await expectSameVerdict(r);
});

test("any mix of fields: the SQL function and the TypeScript schema accept and refuse the same requests", async () => {
  await fc.assert(fc.asyncProperty(request, expectSameVerdict), { numRuns: 300, seed: 20261205, endOnFailure: true });
});

test("the property sees a disagreement: a request one side accepts and the other refuses", async () => {
  // The same machinery, pointed at a pair that must differ, says so.
  const refused = { entityId: "ada", subject: "Hi", text: "" };
  expect(typescriptVerdict(refused).accepted).toBe(false);
  expect((await sqlVerdict({ entityId: "ada", subject: "Hi", text: "body" })).accepted).toBe(true);
});
