/**
 * Issue 9.3: an idempotency key belongs to its caller (an API key, or a SQL
 * login); another caller using the same key gets its own notification and
 * learns nothing; SQL callers reach the keys only through the enqueue
 * function.
 */
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

/** The tracking id a login's key stands for, as stored. */
const keyOf = async (login: TestLogin, key: string) =>
  (await t.query("select tracking_id from api.idempotency_keys where scope = $1 and key = $2", [`sql:${login.name}`, key])).rows[0]?.tracking_id;

const enqueue = (login: TestLogin, subject: string, key: string) =>
  login.pool.query<{ id: string }>("select notification.send_notification_to_entity('ada', $1, 'text', idempotency_key => $2) as id", [subject, key]);

describe("idempotency keys per caller", () => {
  it("a SQL client can neither read nor write the keys table", async () => {
    await enqueue(a, "mine", "order-1");
    await expect(a.pool.query("select * from api.idempotency_keys")).rejects.toThrow(/permission denied/);
    await expect(a.pool.query("insert into api.idempotency_keys (scope, key, request_sha256, tracking_id) values ('sql:someone', 'order-9', sha256('x'), 'x')")).rejects.toThrow(
      /permission denied/,
    );
    await expect(a.pool.query("update api.idempotency_keys set tracking_id = 'x'")).rejects.toThrow(/permission denied/);
  });

  it("two logins using one key get two notifications; a repeat gets its own back; another body is refused naming only its own", async () => {
    const fromA = (await enqueue(a, "from A", "shared")).rows[0]!.id;
    const fromB = (await enqueue(b, "from B, another body", "shared")).rows[0]!.id;
    expect(fromA).not.toBe(fromB);
    expect(await keyOf(a, "shared")).toBe(fromA);
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
    expect(rows).toEqual([{ tracking_id: expect.stringMatching(/^[0-9a-f-]{36}$/), created: true }]);
    expect(await keyOf(a, "direct")).toBe(rows[0].tracking_id);
    const scopes = await t.query("select scope from api.idempotency_keys where key = 'direct'");
    expect(scopes.rows).toEqual([{ scope: `sql:${a.name}` }]);
    // B's key of the same name is B's, untouched by A's claim.
    const fromB = (await enqueue(b, "B direct", "direct")).rows[0]!.id;
    expect(fromB).not.toBe(rows[0].tracking_id);
    expect(await keyOf(b, "direct")).toBe(fromB);
  });

  it("no caller can take another's notification: tracking ids are random, and an id can hold one client operation only", async () => {
    // The attack: know (or guess) the id another caller's next notification will get, and write it first.
    const victimKey = "invoice-43";
    const taken = (await enqueue(a, "yours", victimKey)).rows[0]!.id;
    // After the fact, appending under the victim's tracking id is refused: one client operation per id.
    await expect(b.pool.query("insert into notification.client_operations (id, type, payload) values ($1, 'SendNotificationToEntityOp', '{}')", [taken])).rejects.toThrow(
      /duplicate key value violates unique constraint "client_operations_one_per_id"/,
    );
    // Before the fact there is nothing to guess: the same key gets a new random id in every database and for every caller.
    const again = (await enqueue(b, "yours too", victimKey)).rows[0]!.id;
    expect(new Set([taken, again]).size).toBe(2);
    const { rows } = await t.query("select id, recorded_by from notification.client_operations where id = any($1) order by recorded_by", [[taken, again]]);
    expect(rows).toEqual(
      [
        { id: taken, recorded_by: a.name },
        { id: again, recorded_by: b.name },
      ].sort((x, y) => x.recorded_by.localeCompare(y.recorded_by)),
    );
  });
});
