/**
 * Scenario 4: an SMTP server that fails often but transiently. First 30% of
 * mail transactions are answered 451 at DATA; then 25% of connections are
 * cut in the middle of DATA. With attempts to spare (BOT_MAX_ATTEMPTS=10)
 * every notification is delivered, none ends in failure, each refused or cut
 * transaction is one failed attempt in the handling history, and no email
 * arrives twice.
 */
import {
  enqueueMany,
  expectAllDelivered,
  expectAllSentOnAll,
  FLOW_LIMIT_MS,
  seedEntities,
  spawnWorker,
  TEST_TIMEOUT_MS,
  useFaultFixture,
  waitForAllOutcomes,
  workerEnv,
} from "../helpers/faultFlow";

// Two flows of 120: 240 notifications in the file.
const COUNT = 120;

const fixture = useFaultFixture(5);
let entities: string[];

beforeAll(async () => {
  const { t, channels, workers } = fixture;
  entities = await seedEntities(t.db, "smtp");
  const w = spawnWorker("smtp", workerEnv({ databaseUrl: t.url, channels, extra: { BOT_MAX_ATTEMPTS: "10" } }));
  workers.push(w);
  await w.ready();
});
beforeEach(() => {
  fixture.channels.smtp.reset();
  fixture.channels.slack.reset();
});

/** Failed attempts recorded for these notifications' emails, and the failure events written. */
async function emailFailures(ids: string[]) {
  const { rows } = await fixture.t.query<{ fails: number; finals: number; failedEvents: number }>(
    `select (select count(*)::int from email.operations__handling_history h join email.operations o on o.position = h.position
              where o.id = any($1::text[]) and h.concern = 'email_bot' and h.action = 'fail') as fails,
            (select count(*)::int from email.operations__handling where concern = 'email_bot' and status = 'Failed') as finals,
            (select count(*)::int from email.events where id = any($1::text[]) and type = 'FailedToSendEmailEvent') as "failedEvents"`,
    [ids],
  );
  return rows[0]!;
}

async function expectFlowDelivered(label: string, ids: string[], sent: Awaited<ReturnType<typeof enqueueMany>>) {
  const { t, channels } = fixture;
  await waitForAllOutcomes(t.query, ids, FLOW_LIMIT_MS);
  await expectAllSentOnAll(t.query, ids, COUNT);
  const d = expectAllDelivered(channels, sent);
  // Nothing crashed, so nothing may arrive twice.
  expect({ emailDuplicates: d.emailDuplicates, slackDuplicates: d.slackDuplicates }).toEqual({ emailDuplicates: 0, slackDuplicates: 0 });
  // No failure reached the internal team.
  expect(channels.smtp.messages.filter((m) => m.to.includes("oncall@example.test"))).toEqual([]);
  return label;
}

it(
  "30% of transactions answered 451 at DATA: every notification delivered, each 451 one retried attempt",
  async () => {
    const { t, channels } = fixture;
    channels.smtp.faultFraction(0.3, { action: "reject", stage: "DATA", code: 451 }, { seed: 4511 });
    const sent = await enqueueMany(t.db, { label: "smtp451", count: COUNT, entities });
    const ids = sent.map((s) => s.trackingId);
    await expectFlowDelivered("451", ids, sent);

    const refused = channels.smtp.transactions.filter((x) => x.outcome === "rejected" && x.code === 451).length;
    expect(refused).toBeGreaterThan(COUNT / 10);
    const failures = await emailFailures(ids);
    expect(failures).toEqual({ fails: refused, finals: 0, failedEvents: 0 });
    process.stdout.write(`fault 4a: ${COUNT} notifications, ${refused} transactions answered 451, all delivered once\n`);
  },
  TEST_TIMEOUT_MS,
);

it(
  "25% of connections cut in the middle of DATA: every notification delivered, each cut one retried attempt",
  async () => {
    const { t, channels } = fixture;
    channels.smtp.faultFraction(0.25, { action: "drop", stage: "DATA" }, { seed: 2525 });
    const sent = await enqueueMany(t.db, { label: "smtpdrop", count: COUNT, entities });
    const ids = sent.map((s) => s.trackingId);
    await expectFlowDelivered("drop", ids, sent);

    const dropped = channels.smtp.transactions.filter((x) => x.outcome === "dropped" && x.stage === "DATA").length;
    expect(dropped).toBeGreaterThan(COUNT / 10);
    const failures = await emailFailures(ids);
    expect(failures).toEqual({ fails: dropped, finals: 0, failedEvents: 0 });
    process.stdout.write(`fault 4b: ${COUNT} notifications, ${dropped} connections cut mid-DATA, all delivered once\n`);
  },
  TEST_TIMEOUT_MS,
);
