import { sql } from "kysely";
import { allChannels } from "../../src/notification/channels";
import { readOperationOutcomes } from "../../src/notification/outcomes";
import { decideSaga, type SagaInput } from "../../src/notification/saga";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

/**
 * "Was this send a success?" has one answer: notification.operation_outcomes
 * (migrations/0002_notification.sql). The saga decides with it, the
 * projection shows it, the audit views report it. These are the saga's
 * rules about which outcome event counts, moved here from the saga's unit
 * tests when the rule moved into the database.
 */
let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase(4);
});
afterAll(async () => {
  await t?.close();
});

const now = new Date("2029-01-01T00:00:00.000Z");
const saga = (id: string): SagaInput => ({
  awaiting: [{ channel: "email", operationId: `${id}:email`, stream: "email.operations", destination: "x@example.com" }],
  deadline: "2030-01-01T00:00:00.000Z",
  onAllSent: "SentOnAllPreparedChannelsEvent",
  onSomeSent: "SentOnSomePreparedChannelsEvent",
  onNoneSent: "CouldNotSendOnAnyPreparedChannelEvent",
});

/** An email operation and, in this order, its outcome events (written as a superuser: only what the view reads matters here). */
async function emailWith(id: string, outcomes: Array<["succeeded" | "failed", number]>) {
  const operationId = `${id}:email`;
  await t.query("insert into email.operations (id, type, payload) values ($1, 'SendEmailOp', $2)", [
    id,
    { operationId, notificationId: id, purpose: "notification", entityId: "e", to: ["x@example.com"], subject: "s", text: "t", messageId: `<${id}@x>`, tags: {} },
  ]);
  for (const [outcome, attempt] of outcomes) {
    const payload =
      outcome === "succeeded"
        ? { operationId, attempt, messageId: `<${id}@x>`, accepted: ["x@example.com"], rejected: [], response: "250 ok" }
        : { operationId, attempt, error: "550 no", smtpCode: 550, classification: "permanent", reason: "permanent" };
    await t.query("insert into email.events (id, type, payload) values ($1, $2, $3)", [
      id,
      outcome === "succeeded" ? "SucceededInSendingEmailEvent" : "FailedToSendEmailEvent",
      payload,
    ]);
  }
}

async function decided(id: string) {
  const outcomes = await readOperationOutcomes(t.adminDb, [id]);
  return decideSaga(saga(id), outcomes.get(id) ?? [], now);
}

async function auditStatus(id: string): Promise<string> {
  const { rows } = await t.query<{ status: string }>("select status from audit.emails where notification_id = $1", [id]);
  return rows[0]!.status;
}

describe("one answer to 'did this send succeed?'", () => {
  it("a failure wins over a success for the same operation and attempt", async () => {
    await emailWith("n1", [
      ["succeeded", 1],
      ["failed", 1],
    ]);
    expect(await decided("n1")).toMatchObject({ done: true, eventType: "CouldNotSendOnAnyPreparedChannelEvent" });
    expect(await auditStatus("n1")).toBe("failed");
  });

  it("a later attempt (a re-drive) supersedes the earlier outcome", async () => {
    await emailWith("n2", [
      ["failed", 1],
      ["succeeded", 2],
    ]);
    expect(await decided("n2")).toMatchObject({ done: true, eventType: "SentOnAllPreparedChannelsEvent" });
    expect(await auditStatus("n2")).toBe("sent");
  });

  it("an operation with no outcome event yet has none: the saga waits", async () => {
    await emailWith("n3", []);
    expect(await decided("n3")).toEqual({ done: false, waitingFor: ["n3:email"] });
    expect(await auditStatus("n3")).toBe("pending");
  });

  it("the channels the code registers are the channels the database decides for", async () => {
    const { rows } = await sql<{ name: string; operations_stream: string; events_stream: string; succeeded_type: string; failed_type: string }>`
      select * from notification.channels order by name`.execute(t.adminDb);
    expect(rows).toEqual(
      allChannels
        .map((c) => ({
          name: c.name,
          operations_stream: c.streams.operations,
          events_stream: c.streams.events,
          succeeded_type: c.outcomeTypes.succeeded,
          failed_type: c.outcomeTypes.failed,
        }))
        .sort((a, b) => a.name.localeCompare(b.name)),
    );
  });
});
