import { createEmailTransport, type EmailTransport } from "../../src/email/transport";
import { startSmtpServer, type TestSmtpServer } from "../helpers/smtpServer";

/** The scripted SMTP server other tests rely on: its faults must be exactly reproducible. */

let server: TestSmtpServer;
let transport: EmailTransport;

beforeEach(async () => {
  server = await startSmtpServer();
  transport = createEmailTransport({ smtpUrl: server.url, from: "t@example.com", sinkDir: "/nonexistent" });
});
afterEach(async () => {
  await transport.close?.();
  await server.close();
});

async function sendMany(n: number): Promise<boolean[]> {
  const outcomes: boolean[] = [];
  for (let i = 1; i <= n; i++) {
    const message = { from: "t@example.com", to: ["r@example.com"], subject: `m${i}`, text: "x", messageId: `<m${i}@test>` };
    outcomes.push(
      await transport.send(message).then(
        () => true,
        () => false,
      ),
    );
  }
  return outcomes;
}

it("without a seed, fails exactly floor(n * fraction) of the first n transactions, evenly spread", async () => {
  server.faultFraction(0.3, { action: "reject", stage: "DATA", code: 451 });
  const outcomes = await sendMany(10);
  expect(outcomes.map((ok, i) => (ok ? null : i + 1)).filter(Boolean)).toEqual([4, 7, 10]);
  expect(server.transactions.filter((t) => t.outcome === "rejected" && t.code === 451)).toHaveLength(3);
  expect(server.messages).toHaveLength(7);
});

it("with a seed, fails the same transactions every run", async () => {
  server.faultFraction(0.5, { action: "reject", stage: "RCPT", code: 450 }, { seed: 42 });
  const first = await sendMany(12);
  const other = await startSmtpServer();
  const otherTransport = createEmailTransport({ smtpUrl: other.url, from: "t@example.com", sinkDir: "/nonexistent" });
  try {
    other.faultFraction(0.5, { action: "reject", stage: "RCPT", code: 450 }, { seed: 42 });
    const again: boolean[] = [];
    for (let i = 1; i <= 12; i++) {
      const message = { from: "t@example.com", to: ["r@example.com"], subject: `m${i}`, text: "x", messageId: `<m${i}@test>` };
      again.push(
        await otherTransport.send(message).then(
          () => true,
          () => false,
        ),
      );
    }
    expect(again).toEqual(first);
    expect(first.some((ok) => !ok) && first.some((ok) => ok)).toBe(true);
  } finally {
    await otherTransport.close?.();
    await other.close();
  }
});

it("counts CONNECT faults per connection and the others per transaction", async () => {
  server.rejectNext(1, "CONNECT", 421, "4.3.2 Too busy");
  server.rejectNext(1, "MAIL", 451);
  const outcomes = await sendMany(3);
  expect(outcomes).toEqual([false, false, true]);
  // The refused greeting cost one connection; whether the client reuses the next one is its business.
  expect(server.connections).toBeGreaterThanOrEqual(2);
  expect(server.transactions.map((t) => [t.outcome, t.stage, t.code])).toEqual([
    ["rejected", "MAIL", 451],
    ["accepted", null, 250],
  ]);
});

it("delays the reply, then accepts", async () => {
  server.setLatency(150);
  const started = Date.now();
  expect(await sendMany(1)).toEqual([true]);
  expect(Date.now() - started).toBeGreaterThanOrEqual(140);
});
