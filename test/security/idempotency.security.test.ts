/**
 * Issue 9.3: an idempotency key belongs to its caller (an API key, or a SQL
 * login); another caller using the same key gets its own notification and
 * learns nothing; SQL callers reach the keys only through the enqueue
 * function.
 */
import { trackingIdForIdempotencyKey } from "../../src/notification/ids";
import { createTestDatabase, type TestDatabase, type TestLogin } from "../helpers/db";
import { createEntity } from "../helpers/tidings";

let t: TestDatabase;
let a: TestLogin;
let b: TestLogin;

beforeAll(async () => {
  t = await createTestDatabase(5);
  // Notifications are for entities that exist: enqueue refuses any other.
  await createEntity(t, "ada");
  a = await t.createLogin({ prefix: "svc_a", grants: ["tidings_client"] });
  b = await t.createLogin({ prefix: "svc_b", grants: ["tidings_client"] });
});
afterAll(async () => {
  await t.close();
});

const enqueue = (login: TestLogin, subject: string, key: string) =>
  login.pool.query<{ id: string }>("select tidings.send_notification_to_entity('ada', $1, 'text', idempotency_key => $2) as id", [subject, key]);

describe("idempotency keys per caller", () => {
  it("a SQL client can neither read nor write the keys table", async () => {
    await enqueue(a, "mine", "order-1");
    await expect(a.pool.query("select * from api.idempotency_keys")).rejects.toThrow(/permission denied/);
    await expect(
      a.pool.query("insert into api.idempotency_keys (scope, key, request_sha256, tracking_id) values ('sql:someone', 'order-9', sha256('x'), 'x')"),
    ).rejects.toThrow(/permission denied/);
    await expect(a.pool.query("update api.idempotency_keys set tracking_id = 'x'")).rejects.toThrow(/permission denied/);
  });

  it("two logins using one key get two notifications; a repeat gets its own back; another body is refused naming only its own", async () => {
    const fromA = (await enqueue(a, "from A", "shared")).rows[0]!.id;
    const fromB = (await enqueue(b, "from B, another body", "shared")).rows[0]!.id;
    expect(fromA).not.toBe(fromB);
    expect(fromA).toBe(trackingIdForIdempotencyKey(`sql:${a.name}`, "shared"));
    expect((await enqueue(a, "from A", "shared")).rows[0]!.id).toBe(fromA);
    expect((await enqueue(b, "from B, another body", "shared")).rows[0]!.id).toBe(fromB);
    const refused = enqueue(b, "from B, changed", "shared");
    await expect(refused).rejects.toThrow(/idempotency key "shared" was already used with a different request/);
    await expect(enqueue(b, "from B, changed", "shared")).rejects.toThrow(new RegExp(fromB));
    await expect(enqueue(b, "from B, changed", "shared")).rejects.not.toThrow(new RegExp(fromA));
    const { rows } = await t.query("select id, payload->>'subject' as subject from notification.client_operations where id = any($1) order by subject", [[fromA, fromB]]);
    expect(rows).toEqual([
      { id: fromA, subject: "from A" },
      { id: fromB, subject: "from B, another body" },
    ]);
  });

  it("claiming a key directly claims it for the caller's own login only", async () => {
    const { rows } = await a.pool.query("select * from api.claim_idempotency_key('direct', '{}'::jsonb)");
    expect(rows).toEqual([{ tracking_id: trackingIdForIdempotencyKey(`sql:${a.name}`, "direct"), created: true }]);
    const scopes = await t.query("select scope from api.idempotency_keys where key = 'direct'");
    expect(scopes.rows).toEqual([{ scope: `sql:${a.name}` }]);
    // B's key of the same name is B's, untouched by A's claim.
    expect((await enqueue(b, "B direct", "direct")).rows[0]!.id).toBe(trackingIdForIdempotencyKey(`sql:${b.name}`, "direct"));
  });
});
