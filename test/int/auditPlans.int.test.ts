import { createTestDatabase, type TestDatabase } from "../helpers/db";

/**
 * "What emails went to this address?" must read that address's records, not
 * every record of the channel: the audit views look each operation's outcome
 * up in notification.operation_outcomes one operation at a time (migration
 * 0019). Checked on the plan PostgreSQL runs, with its actual row counts,
 * over a few thousand operations: the question for one address may read a
 * handful of the channel's events, never all of them.
 */

let t: TestDatabase;
const OPERATIONS = 3000;
const ADDRESSES = 300;

beforeAll(async () => {
  t = await createTestDatabase();
  // Bulk load as the superuser (no jobs queued, no guard triggers): an operation,
  // its success event and its handling row each, on both channels, ten per address.
  const admin = await t.adminPool.connect();
  try {
    await admin.query("begin");
    await admin.query("set local session_replication_role = replica");
    for (const [channel, destination] of [
      ["email", `jsonb_build_object('to', jsonb_build_array('user' || (g % ${ADDRESSES}) || '@example.com'), 'subject', 's')`],
      ["slack", `jsonb_build_object('channel', 'C' || (g % ${ADDRESSES}), 'text', 't')`],
    ] as const) {
      const [opType, okType] = channel === "email" ? ["SendEmailOp", "SucceededInSendingEmailEvent"] : ["SendSlackMessageOp", "SucceededInSendingSlackMessageEvent"];
      await admin.query(
        `insert into ${channel}.operations (id, type, payload, recorded_at)
         select 'n-' || g, $1, ${destination} || jsonb_build_object('operationId', 'n-' || g || ':${channel}', 'purpose', 'notification'),
                now() - make_interval(secs => $2 - g)
         from generate_series(1, $2) g`,
        [opType, OPERATIONS],
      );
      await admin.query(
        `insert into ${channel}.events (id, type, payload, caused_by_stream, caused_by_position, recorded_at)
         select o.id, $1, jsonb_build_object('operationId', o.payload->>'operationId', 'attempt', 1, 'response', '250 2.0.0 Ok', 'ts', '1.0'),
                '${channel}.operations', o.position, o.recorded_at
         from ${channel}.operations o`,
        [okType],
      );
      await admin.query(
        `insert into ${channel}.operations__handling (position, concern, status, attempts, last_action, last_actor, updated_at)
         select o.position, '${channel}_bot', 'Completed', 1, 'complete', '${channel}_bot', o.recorded_at from ${channel}.operations o`,
      );
    }
    await admin.query("commit");
  } catch (error) {
    await admin.query("rollback");
    throw error;
  } finally {
    admin.release();
  }
  await t.query("analyze email.operations, email.events, email.operations__handling, slack.operations, slack.events, slack.operations__handling");
});
afterAll(async () => {
  await t.close();
});

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  Schema?: string;
  "Actual Rows": number;
  "Actual Loops": number;
  "Rows Removed by Filter"?: number;
  "Rows Removed by Index Recheck"?: number;
  Plans?: PlanNode[];
}

/** Rows the plan read from a schema's `events` table (its partitions included): those it kept and those its filters threw away. */
function eventRowsRead(node: PlanNode, schema: string): number {
  const read = node["Actual Rows"] + (node["Rows Removed by Filter"] ?? 0) + (node["Rows Removed by Index Recheck"] ?? 0);
  const own = node.Schema === schema && /^events(_p\d+)?$/.test(node["Relation Name"] ?? "") ? read * node["Actual Loops"] : 0;
  return own + (node.Plans ?? []).reduce((sum, child) => sum + eventRowsRead(child, schema), 0);
}

async function explainAsAuditor(query: string, value: string): Promise<{ rows: number; eventsRead: number; schema: string }> {
  const session = await t.pool.connect();
  try {
    await session.query("begin read only");
    await session.query("set local role tidings_auditor");
    const { rows: answer } = await session.query(query, [value]);
    const { rows } = await session.query(`explain (analyze, verbose, format json) ${query}`, [value]);
    const plan = (rows[0]["QUERY PLAN"] as Array<{ Plan: PlanNode }>)[0]!.Plan;
    const schema = query.includes("audit.emails") ? "email" : "slack";
    return { rows: answer.length, eventsRead: eventRowsRead(plan, schema), schema };
  } finally {
    await session.query("rollback").catch(() => {});
    session.release();
  }
}

describe("an audit question about one recipient", () => {
  it("emails to one address reads that address's email events, not the channel's", async () => {
    const answer = await explainAsAuditor("select * from audit.emails where recipient = $1 order by requested_at desc", "user7@example.com");
    expect(answer.rows).toBe(OPERATIONS / ADDRESSES);
    // Each of its ten operations: its success event (the ok lookup and the outcome), and no failure.
    expect(answer.eventsRead).toBeGreaterThan(0);
    expect(answer.eventsRead).toBeLessThanOrEqual(4 * (OPERATIONS / ADDRESSES));
  });

  it("an address no email went to reads no email event at all, and answers nothing", async () => {
    const answer = await explainAsAuditor("select * from audit.emails where recipient = $1 order by requested_at desc", "nobody@example.com");
    expect(answer.rows).toBe(0);
    expect(answer.eventsRead).toBe(0);
  });

  it("Slack messages to one channel reads that channel's Slack events, not all of them", async () => {
    const answer = await explainAsAuditor("select * from audit.slack_messages where channel = $1 order by requested_at desc", "C7");
    expect(answer.rows).toBe(OPERATIONS / ADDRESSES);
    expect(answer.eventsRead).toBeGreaterThan(0);
    expect(answer.eventsRead).toBeLessThanOrEqual(4 * (OPERATIONS / ADDRESSES));
  });
});
