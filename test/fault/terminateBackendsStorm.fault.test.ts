/**
 * Scenario 3 made harsher: the worker's connections are terminated every
 * 20 ms for 8 s, so the pools the worker starts to replace failed ones meet
 * terminated connections too. The worker must carry on by itself and every
 * notification reach its outcome, none lost. Before src/bots/worker.ts
 * replaced a pool that keeps failing to fetch (graphile-worker caches a failed
 * task lookup per pool), this stalled on every run.
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
  "worker connections terminated every 20 ms: the worker carries on and every notification reaches its outcome",
  async () => {
    const r = await runTerminatedConnections(t, { count: COUNT, everyMs: 20 });
    expectRecovered(r);
    process.stdout.write(
      `fault 3 (storm): ${COUNT} notifications, ${r.faultDetail} with ${r.emailsBeforeFault} emails accepted, ${r.heldAtFault} held and ${r.outcomesBeforeFault} outcomes reached before it; ` +
        `all outcomes ${r.recoveryMs} ms after the first termination; duplicates: ${r.emailDuplicates} email, ${r.slackDuplicates} slack\n`,
    );
  },
  TEST_TIMEOUT_MS,
);
