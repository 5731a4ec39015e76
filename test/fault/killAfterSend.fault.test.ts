/**
 * Scenario 1b: the worst moment to die. The fault worker
 * (test/fixtures/faultWorker.ts: the real bots and configuration) SIGKILLs
 * itself right after an email was accepted by the SMTP server and before its
 * outcome is recorded: the fault lands by construction, in the process
 * itself. Restarted each time, the workers still deliver every notification;
 * each killed email arrives again, with the same Message-ID, and the repeats
 * are exactly the emails delivered in doubt (the killed one, and batch-mates
 * accepted but not yet recorded), nothing else. A killed email taken up by
 * the next worker can be in doubt again when that one is killed in turn (on
 * a slow machine it may be among its sends in flight): then it arrives once
 * more, as the account of that death says.
 */
import {
  channelHistory,
  enqueueMany,
  expectAllDelivered,
  expectAllSentOnAll,
  expectHandoversExplained,
  expectRepeatsExplained,
  FLOW_LIMIT_MS,
  seedEntities,
  settleAfterDeath,
  spawnWorker,
  TEST_TIMEOUT_MS,
  useFaultFixture,
  waitForAllOutcomes,
  workerEnv,
  type DeathSnapshot,
} from "../helpers/faultFlow";

const COUNT = 200;
const KILLS = 3;
const KILL_AFTER_EMAILS = 25;

const fixture = useFaultFixture(10);

it(
  "killed between a send and the recording of its outcome, three times: delivered, each killed email sent twice with one Message-ID",
  async () => {
    const { t, channels, workers } = fixture;
    const entities = await seedEntities(t.db, "k2");
    const sent = await enqueueMany(t.db, { label: "k2", count: COUNT, entities });
    const ids = sent.map((s) => s.trackingId);
    const env = (killAfter: number) => workerEnv({ databaseUrl: t.url, channels, extra: { KILL_AFTER_EMAILS: String(killAfter), WORKER_CONCURRENCY: "6" } });

    const killed: { trackingId: string; messageId: string }[] = [];
    const deaths: DeathSnapshot[] = [];
    for (let round = 1; round <= KILLS; round++) {
      const w = spawnWorker(`killer-${round}`, env(KILL_AFTER_EMAILS), "test/fixtures/faultWorker.ts");
      workers.push(w);
      await w.ready();
      // Bounded: a worker that never reaches its Nth send fails the test instead of hanging it.
      let timer: NodeJS.Timeout | undefined;
      const exit = await Promise.race([w.exited, new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), FLOW_LIMIT_MS)))]);
      clearTimeout(timer);
      expect(exit).toEqual({ code: null, signal: "SIGKILL" });
      const line = /KILLING (\S+) (\S+)/.exec(w.output());
      expect(line).not.toBeNull();
      killed.push({ trackingId: line![1]!, messageId: line![2]! });
      deaths.push(await settleAfterDeath({ query: t.query, channels }, w, ids, sent));
    }

    const last = spawnWorker("finisher", env(0), "test/fixtures/faultWorker.ts");
    workers.push(last);
    await last.ready();
    await waitForAllOutcomes(t.query, ids, FLOW_LIMIT_MS);

    await expectAllSentOnAll(t.query, ids, COUNT);

    const d = expectAllDelivered(channels, sent);
    const account = expectRepeatsExplained(deaths, channels, sent);
    await expectHandoversExplained(t.query, deaths, ids);
    for (const k of killed) {
      // Once, once more per death that left it in doubt: at least the death that killed its sender.
      const expected = account.expectedEmails.get(k.trackingId)!;
      expect(expected).toBeGreaterThanOrEqual(1 + killed.filter((x) => x.messageId === k.messageId).length);
      expect({ messageId: k.messageId, received: d.emails.get(k.messageId) }).toEqual({ messageId: k.messageId, received: expected });
      expect(k.messageId).toBe(`<${k.trackingId}.email@tidings>`);
      // The abandoned attempt is visible: claimed, cancelled as abandoned, claimed again, completed.
      const history = await channelHistory(t.query, "email.operations", k.trackingId);
      const cancel = history.find((h) => h.action === "cancel");
      expect(cancel?.reason).toMatch(/was abandoned before recording an outcome/);
      expect(history.at(-1)?.action).toBe("complete");
    }
    process.stdout.write(
      `fault 1b: ${COUNT} notifications, ${KILLS} kills after a send; in doubt (Running) at the kills: ${account.inDoubt.email} email, ${account.inDoubt.slack} slack; ` +
        `repeats: ${account.emailRepeats} email (exactly the ${account.emailsDeliveredInDoubt} delivered in doubt, ${killed.length} of them the killed sends), ${account.slackRepeats} slack\n`,
    );
  },
  TEST_TIMEOUT_MS,
);
