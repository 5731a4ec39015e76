/**
 * Scenario 3: the worker's database connections are terminated again and
 * again (pg_terminate_backend every 200 ms for 8 s, as a failover proxy or an
 * idle-session killer would) while notifications flow. With nothing to
 * restart it, the worker (src/main.ts) must take new connections by itself
 * (if it dies the test fails at once, with the cause) and every notification
 * reach its outcome, none lost.
 */
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { countOpenResources, expectNothingLeftOpen, TEST_TIMEOUT_MS } from "../helpers/faultFlow";
import { expectRecovered, runTerminatedConnections } from "../helpers/faultScenarios";

const COUNT = 240;

let t: TestDatabase;
let openAtStart: Map<string, number>;
beforeAll(async () => {
  openAtStart = countOpenResources();
  t = await createTestDatabase(5);
});
afterAll(async () => {
  await t?.close();
  await expectNothingLeftOpen(openAtStart);
});

it(
  "worker connections terminated every 200 ms: the worker carries on and every notification reaches its outcome",
  async () => {
    const r = await runTerminatedConnections(t, { count: COUNT });
    expectRecovered(r);
    process.stdout.write(
      `fault 3: ${COUNT} notifications, ${r.faultDetail} with ${r.emailsBeforeFault} emails accepted, ${r.heldAtFault} held and ${r.outcomesBeforeFault} outcomes reached before it; ` +
        `all outcomes ${r.recoveryMs} ms after the first termination; duplicates: ${r.emailDuplicates} email, ${r.slackDuplicates} slack\n`,
    );
  },
  TEST_TIMEOUT_MS,
);
