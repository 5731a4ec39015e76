import pino from "pino";
import { createEmailTransport } from "../../src/email/transport";
import { createSlackPoster } from "../../src/slack/client";
import type { SlackStandIn } from "../../test/helpers/slackStandIn";
import type { TestSmtpServer } from "../../test/helpers/smtpServer";

/** Run `total` calls with at most `concurrency` in flight; returns calls per second. */
export async function closedLoop(total: number, concurrency: number, call: (i: number) => Promise<unknown>): Promise<number> {
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < total; i = next++) await call(i);
    }),
  );
  return (total * 1000) / (performance.now() - started);
}

/**
 * The physical limit of this box for tidings' work: the same emails and Slack
 * posts, through the same clients (nodemailer pooled like tidings, the
 * official Slack SDK), to the same loopback servers, from a plain loop with
 * no database.
 */
export async function channelsCeiling(smtp: TestSmtpServer, slack: SlackStandIn, total: number, concurrency: number) {
  const transport = createEmailTransport({ smtpUrl: smtp.url, from: "bench <bench@example.test>", sinkDir: "/nonexistent" });
  const poster = createSlackPoster({ token: slack.token, apiUrl: slack.apiUrl, sinkFile: "/nonexistent", logger: pino({ level: "silent" }) });
  try {
    // warm up connections
    await closedLoop(50, concurrency, (i) => send(i));
    const emailsPerSec = await closedLoop(total, concurrency, (i) => send(i));
    const postsPerSec = await closedLoop(total, concurrency, (i) => poster.postMessage({ channel: "U0BENCH001", text: `Benchmark ${i}\n\nHello from the ceiling loop.` }));
    // One notification needs one of each: the pair rate if both ran back to back.
    const pairsPerSec = 1 / (1 / emailsPerSec + 1 / postsPerSec);
    return { emailsPerSec, postsPerSec, pairsPerSec };
  } finally {
    await transport.close?.();
    smtp.reset();
    slack.reset();
  }

  function send(i: number) {
    return transport.send({
      from: "bench <bench@example.test>",
      to: ["bench@example.com"],
      subject: `Benchmark ${i}`,
      text: "Hello from the ceiling loop.",
      messageId: `<ceiling.${i}.${Date.now()}@bench>`,
    });
  }
}
