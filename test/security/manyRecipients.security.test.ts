/**
 * The idempotency rows of requests to many entities: a SQL caller reads and
 * records the tracking ids of its own keys only, through the two security
 * definer functions; it cannot touch the table, and a login without
 * tidings_client cannot call them at all.
 */
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { createEntity, person } from "../helpers/tidings";

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase(4);
  await createEntity(t, "ada", person());
  await createEntity(t, "bob", person());
});
afterAll(async () => {
  await t?.close();
});

it("another login can neither read nor overwrite a caller's tracking ids, and a login without tidings_client is refused", async () => {
  const alice = await t.createLogin({ prefix: "alice", grants: ["tidings_client"] });
  const mallory = await t.createLogin({ prefix: "mallory", grants: ["tidings_client"] });
  const nobody = await t.createLogin({ prefix: "nobody", grants: [] });
  try {
    const { rows } = await alice.pool.query("select * from notification.send_notification_to_entities(array['ada', 'bob'], 'Hi', 'Hello.', idempotency_key => 'k1')");
    const ids = rows.map((r: { tracking_id: string }) => r.tracking_id);

    // Mallory's "k1" is her own key: she sees nothing of Alice's, and recording under it changes nothing of Alice's.
    expect((await mallory.pool.query("select api.idempotency_tracking_ids('k1') as ids")).rows[0].ids).toBeNull();
    await mallory.pool.query("select api.record_idempotency_tracking_ids('k1', array['forged'])");
    expect((await alice.pool.query("select api.idempotency_tracking_ids('k1') as ids")).rows[0].ids).toEqual(ids);
    // Alice cannot rewrite her own list once recorded either.
    await alice.pool.query("select api.record_idempotency_tracking_ids('k1', array['forged'])");
    expect((await alice.pool.query("select api.idempotency_tracking_ids('k1') as ids")).rows[0].ids).toEqual(ids);

    await expect(mallory.pool.query("select * from api.idempotency_keys")).rejects.toThrow(/permission denied/);
    await expect(mallory.pool.query("update api.idempotency_keys set tracking_ids = null")).rejects.toThrow(/permission denied/);
    for (const call of [
      "select api.idempotency_tracking_ids('k1')",
      "select api.record_idempotency_tracking_ids('k1', array['x'])",
      "select * from notification.send_notification_to_entities(array['ada'], 'Hi', 'Hello.')",
    ]) {
      await expect(nobody.pool.query(call)).rejects.toThrow(/permission denied/);
    }
  } finally {
    await Promise.all([alice.pool.end(), mallory.pool.end(), nobody.pool.end()]);
  }
});
