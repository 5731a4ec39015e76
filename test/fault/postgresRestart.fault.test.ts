/**
 * Scenario 2: PostgreSQL itself restarts in the middle of the flow. A
 * throwaway server of this test's own (test/fixtures/faultPostgres.ts; never
 * the suite's shared one) is stopped and started again while two worker
 * processes (src/main.ts) are sending. Every connection is cut and every open
 * transaction rolled back; with nothing to restart them, the workers must
 * reconnect by themselves (a worker that dies fails the test at once, with
 * its cause) and every notification reach its outcome, none lost.
 */
import { countOpenResources, expectNothingLeftOpen, TEST_TIMEOUT_MS } from "../helpers/faultFlow";
import { expectRecovered, runPostgresRestart } from "../helpers/faultScenarios";

const COUNT = 240;

let openAtStart: Map<string, number>;
beforeAll(() => {
  openAtStart = countOpenResources();
});
afterAll(async () => {
  await expectNothingLeftOpen(openAtStart);
});

it(
  "the database restarts mid-flow: the workers carry on and every notification reaches its outcome",
  async () => {
    const r = await runPostgresRestart({ count: COUNT });
    expectRecovered(r);
    process.stdout.write(
      `fault 2: ${COUNT} notifications, ${r.faultDetail} with ${r.emailsBeforeFault} emails accepted, ${r.heldAtFault} held and ${r.outcomesBeforeFault} outcomes reached before it; ` +
        `all outcomes ${r.recoveryMs} ms after; duplicates: ${r.emailDuplicates} email, ${r.slackDuplicates} slack\n`,
    );
  },
  TEST_TIMEOUT_MS,
);
