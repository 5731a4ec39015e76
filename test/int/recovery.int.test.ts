import { spawn } from "node:child_process";
import path from "node:path";
import type { ExternalBot } from "../../src/bots/bot";
import { inTransaction } from "../../src/db/database";
import { appendOne } from "../../src/streams/append";
import { getHandling, getHistory } from "../../src/streams/handling";
import { createTestDatabase, declareTestStream, waitFor, type TestDatabase } from "../helpers/db";
import { startTestWorker } from "../helpers/worker";

let t: TestDatabase;
const stream = "testing.crash";

beforeAll(async () => {
  t = await createTestDatabase();
  await declareTestStream(t.adminDb, { stream, producer: "test_producer", consumer: "crash_consumer" });
});
afterAll(async () => {
  await t.close();
});

describe("a worker killed before completing", () => {
  it("leaves the record to be handled again by another worker, with the abandoned attempt in the history", async () => {
    const { position } = await inTransaction(t.db, "test_producer", (tx) => appendOne(tx, stream, { id: "crash-1", type: "Thing", payload: {} }));

    const child = spawn(process.execPath, ["--import", "tsx", path.join(__dirname, "../fixtures/stallingWorker.ts")], {
      env: { ...process.env, DATABASE_URL: t.url, LEASE_MS: "1000" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (d) => (output += String(d)));
    child.stderr.on("data", (d) => (output += String(d)));
    // "close": gone, and its pipes closed. Killed whatever happens here: a
    // stalling worker left behind never ends and keeps jest's worker alive.
    const closed = new Promise((resolve) => child.once("close", resolve));
    try {
      await waitFor(async () => output.includes(`STARTED ${position}`), { what: "the stalling worker to start the send" });
      expect((await getHandling(t.adminDb, stream, position, "crash_consumer")).status).toBe("Running");
    } finally {
      child.kill("SIGKILL");
      await closed;
    }

    const sent: number[] = [];
    const bot: ExternalBot<object, void> = {
      kind: "external",
      stream,
      concern: "crash_consumer",
      actor: "crash_consumer",
      async perform({ record }) {
        sent.push(record.position);
      },
      async succeeded() {},
    };
    const worker = await startTestWorker(t, [bot], {}, { leaseMs: 1000 });
    try {
      await waitFor(async () => (await getHandling(t.adminDb, stream, position, "crash_consumer")).status === "Completed", {
        what: "another worker to finish the abandoned record",
        timeoutMs: 20_000,
      });
    } finally {
      await worker.stop();
    }
    expect(sent).toEqual([position]);
    const history = await getHistory(t.adminDb, stream, position, "crash_consumer");
    expect(history.map((h) => `${h.action}:${h.toStatus}`)).toEqual(["claim:Running", "cancel:AvailableAfterExternalCancellation", "claim:Running", "complete:Completed"]);
    expect(history[1]!.reason).toMatch(/abandoned before recording an outcome/);
    expect(history[2]!.attempt).toBe(2);
  });
});
