/**
 * Issue 9.5: small leaks. The existence lookup answers only a stream's
 * producers; a bot changes only the handling of the concerns it consumes;
 * the alert's ready-to-paste SQL quotes the record id; record ids hold no
 * control characters.
 */
import { sql } from "kysely";
import { inTransaction } from "../../src/db/database";
import { askQuery } from "../../src/notification/alert.bots";
import { appendOne } from "../../src/streams/append";
import { claim, transition } from "../../src/streams/handling";
import { asOwner, createTestDatabase, declareTestActor, declareTestStream, type TestDatabase } from "../helpers/db";

let t: TestDatabase;

beforeAll(async () => {
  t = await createTestDatabase(5);
});
afterAll(async () => {
  await t.close();
});

describe("tidings.existing_position", () => {
  const lookup = (actor: string, stream: string) => inTransaction(t.db, actor, (tx) => sql`select tidings.existing_position(${stream}, 'anything') as p`.execute(tx));

  it("answers a producer about its own stream", async () => {
    await expect(lookup("client", "notification.client_operations")).resolves.toBeDefined();
    await expect(lookup("notification_bot", "notification.sagas")).resolves.toBeDefined();
  });

  it("refuses anyone about a stream it does not produce", async () => {
    await expect(lookup("client", "notification.events")).rejects.toThrow(/role tidings_client does not produce stream notification.events/);
    await expect(lookup("client", "entity.events")).rejects.toThrow(/does not produce stream entity.events/);
    await expect(lookup("email_bot", "notification.client_operations")).rejects.toThrow(/does not produce/);
    await expect(lookup("slack_bot", "email.events")).rejects.toThrow(/does not produce/);
  });

  it("refuses a SQL login granted tidings_client about other streams too", async () => {
    const login = await t.createLogin({ prefix: "prober", grants: ["tidings_client"] });
    await expect(login.pool.query("select tidings.existing_position('notification.client_operations', 'x')")).resolves.toBeDefined();
    await expect(login.pool.query("select tidings.existing_position('email.operations', 'x')")).rejects.toThrow(/does not produce/);
  });

  it("its set-based twin (tidings.existing_positions, what append's strategies use) refuses the same callers", async () => {
    const many = (actor: string, stream: string) => inTransaction(t.db, actor, (tx) => sql`select * from tidings.existing_positions(${stream}, array['a', 'b'], null)`.execute(tx));
    await expect(many("notification_bot", "notification.sagas")).resolves.toBeDefined();
    await expect(many("client", "notification.events")).rejects.toThrow(/role tidings_client does not produce stream notification.events/);
    await expect(many("slack_bot", "email.events")).rejects.toThrow(/does not produce/);
    // Not even the auditor, who reads the audit views: a producer's lookup is for producers.
    await expect(many("auditor", "notification.events")).rejects.toThrow(/does not produce|permission denied/);
    const login = await t.createLogin({ prefix: "prober2", grants: ["tidings_client"] });
    await expect(login.pool.query("select * from tidings.existing_positions('email.operations', array['x'])")).rejects.toThrow(/does not produce/);
  });
});

describe("handling state of another bot's concern", () => {
  const stream = "testing.shared";
  let position: number;

  beforeAll(async () => {
    await declareTestStream(t.adminDb, { stream, producer: "shared_writer", consumer: "first_bot" });
    await asOwner(t.adminDb, async (tx) => {
      await declareTestActor(tx, "second_bot");
      await sql`select tidings.declare_consumer(${stream}, 'second_bot', 'second_bot', null, 'second concern')`.execute(tx);
    });
    position = (await inTransaction(t.db, "shared_writer", (tx) => appendOne(tx, stream, { id: "s-1", type: "Thing", payload: {} }))).position;
  });

  it("a bot claims its own concern", async () => {
    const won = await inTransaction(t.db, "first_bot", (tx) => claim(tx, { stream, position, concern: "first_bot" }, { actor: "first_bot" }));
    expect(won.claimed).toBe(true);
  });

  it("a bot writing the handling of another consumer's concern, or of no concern, is refused by the database", async () => {
    for (const concern of ["second_bot", "nobody"]) {
      await expect(
        inTransaction(t.db, "first_bot", (tx) =>
          sql`insert into testing.shared__handling (position, concern, status, last_action, last_actor, last_reason)
              values (${position}, ${concern}, 'DisabledForRecord', 'disable_for_record', 'first_bot', 'squat')`.execute(tx),
        ),
      ).rejects.toThrow(new RegExp(`role tidings_first_bot may not change the handling of stream testing.shared for concern "${concern}"`));
    }
    // The saga bot holds write access to email.events' handling, for its own concern only.
    await expect(
      inTransaction(t.db, "saga_bot", (tx) =>
        sql`insert into email.events__handling (position, concern, status, last_action, last_actor, last_reason)
            values (1, 'email_bot', 'DisabledForRecord', 'disable_for_record', 'saga_bot', 'squat')`.execute(tx),
      ),
    ).rejects.toThrow(/may not change the handling of stream email.events for concern "email_bot"/);
    const { rows } = await t.query("select count(*)::int as n from testing.shared__handling where concern <> 'first_bot'");
    expect(rows[0].n).toBe(0);
  });

  it("the operator may repair any concern, under a person's name", async () => {
    const state = await inTransaction(t.db, "operator", (tx) => claim(tx, { stream, position, concern: "second_bot" }, { actor: "bea", reason: "by hand" }));
    expect(state.claimed).toBe(true);
  });

  it("the operator may not pass its changes off as the machinery's (a bot, the runner)", async () => {
    for (const actor of ["email_bot", "second_bot", "runner", "operator"]) {
      await expect(inTransaction(t.db, "operator", (tx) => transition(tx, { stream, position, concern: "second_bot" }, "complete", { actor }))).rejects.toThrow(
        new RegExp(`may not record a handling change as "${actor}"`),
      );
    }
    // The same check holds at the email stream: no invented "sent" from email_bot.
    const email = await t.query("insert into email.operations (id, type, payload) values ('op-1', 'SendEmailOp', '{}') returning position");
    await expect(
      inTransaction(t.db, "operator", (tx) =>
        claim(tx, { stream: "email.operations", position: email.rows[0].position, concern: "email_bot" }, { actor: "email_bot", reason: "x" }),
      ),
    ).rejects.toThrow(/may not record a handling change as "email_bot"/);
  });
});

describe("record ids in the alert's ready-to-paste SQL", () => {
  it("are quoted: pasted, the statement selects exactly that id and runs nothing else", async () => {
    const evil = "x'; create table pwned (); --";
    await t.query("insert into notification.events (id, type, payload) values ($1, 'SendNotificationRequestedEvent', '{}')", [evil]);
    const statement = askQuery(evil);
    expect(statement).toBe(`select * from notification.events where id = 'x''; create table pwned (); --' order by position;`);
    // The simple query protocol runs several statements: an injection would create the table.
    const { rows } = await t.query(statement);
    expect(rows.map((r) => r.id)).toEqual([evil]);
    expect((await t.query("select to_regclass('public.pwned') as t")).rows[0].t).toBeNull();
  });

  it("may not hold control characters (a newline would forge lines in logs and alerts)", async () => {
    const login = await t.createLogin({ prefix: "ids", grants: ["tidings_client"] });
    await expect(
      login.pool.query("insert into notification.client_operations (id, type, payload) values (E'x\\nSubject: fake', 'SendNotificationToEntityOp', '{}')"),
    ).rejects.toThrow(/violates check constraint/);
  });
});

describe("a stream switched off for a concern", () => {
  it("is recorded in the history by the database, at the database's time; nobody writes the history by hand", async () => {
    await inTransaction(t.db, "operator", (tx) =>
      sql`insert into tidings.stream_concern_states (stream, concern, disabled, changed_at, changed_by, reason)
          values ('email.operations', 'email_bot', true, '2020-01-01', 'bea', 'maintenance')`.execute(tx),
    );
    const { rows } = await t.query(
      "select changed_by, changed_at > now() - interval '1 minute' as now_ish, recorded_by from tidings.stream_concern_history where stream = 'email.operations'",
    );
    expect(rows).toEqual([{ changed_by: "bea", now_ish: true, recorded_by: "tidings_app as tidings_operator" }]);
    const state = await t.query("select changed_at > now() - interval '1 minute' as now_ish from tidings.stream_concern_states where stream = 'email.operations'");
    expect(state.rows).toEqual([{ now_ish: true }]);
    await expect(
      inTransaction(t.db, "operator", (tx) =>
        sql`insert into tidings.stream_concern_history (stream, concern, disabled, changed_at, changed_by, reason)
            values ('email.operations', 'email_bot', false, '2019-01-01', 'alice', 'invented')`.execute(tx),
      ),
    ).rejects.toThrow(/permission denied/);
    await expect(t.query("delete from tidings.stream_concern_history")).rejects.toThrow(/append-only/);
  });
});

describe("queueing another concern's work", () => {
  it("is refused to any bot but the concern's own consumer; the operator may", async () => {
    const { rows } = await t.query("insert into notification.client_operations (id, type, payload) values ('q-1', 'SendNotificationToEntityOp', '{}') returning position");
    const queue = (actor: string) =>
      inTransaction(t.db, actor, (tx) => sql`select tidings.queue_handling('notification.client_operations', 'notification_bot', array[${rows[0].position}::bigint])`.execute(tx));
    await expect(queue("email_bot")).rejects.toThrow(/role tidings_email_bot may not queue the handling of stream notification.client_operations/);
    await expect(queue("notification_bot")).resolves.toBeDefined();
    await expect(queue("operator")).resolves.toBeDefined();
  });
});

describe("data a bot writes never becomes SQL the owner runs", () => {
  it("a checkpoint cursor named like an injection is ignored by the owner's read_lag, and runs nothing", async () => {
    const injected =
      "(select tidings.constrain_record_types('notification.snapshots drop constraint if exists x; create role rt_made_by_owner nologin; --')) z, notification.client_operations";
    await inTransaction(t.db, "projection_bot", (tx) =>
      sql`update tidings.checkpoints set cursors = cursors || jsonb_build_object(${injected}::text, '0-0') where name = 'notification_views'`.execute(tx),
    );
    const { rows } = await t.pool.query("select reader, stream from tidings.read_lag() where reader like 'checkpoint:%'");
    expect(rows.map((r) => r.stream)).not.toContain(injected);
    expect((await t.query("select count(*)::int as n from pg_roles where rolname = 'rt_made_by_owner'")).rows[0].n).toBe(0);
    // The engine refuses such a name wherever it would build SQL from it.
    await expect(t.query("select tidings.stream_table($1)", [injected])).rejects.toThrow(/invalid stream name/);
  });
});
