/**
 * The minimal outbox's worker (bench/lib/minimalOutbox.ts): what a team would
 * write in a day instead of tidings. One graphile-worker task reads the row,
 * sends the email and the Slack post at once through the same clients tidings
 * uses, and marks the row sent. No streams, no handling history, no saga, no
 * views. Run as a child process, like tidings's workers in the bench.
 */
import { Logger, run } from "graphile-worker";
import pg from "pg";
import pino from "pino";
import { createEmailTransport } from "../src/email/transport";
import { createSlackPoster } from "../src/slack/client";

function env(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

async function main() {
  const concurrency = Number(env("WORKER_CONCURRENCY"));
  const pool = new pg.Pool({ connectionString: env("DATABASE_URL"), max: concurrency + 10 });
  pool.on("error", (error) => process.stderr.write(`idle connection failed: ${error.message}\n`));
  pool.on("connect", (client) => client.on("error", (error) => process.stderr.write(`connection failed: ${error.message}\n`)));
  const from = "bench <bench@example.test>";
  const transport = createEmailTransport({ smtpUrl: env("SMTP_URL"), from, sinkDir: "/nonexistent" });
  const poster = createSlackPoster({ token: env("SLACK_BOT_TOKEN"), apiUrl: env("SLACK_API_URL"), sinkFile: "/nonexistent", logger: pino({ level: "silent" }) });
  const runner = await run({
    pgPool: pool,
    concurrency,
    pollInterval: 1000,
    noHandleSignals: true,
    logger: new Logger(() => () => {}),
    // The same queue settings as tidings's workers (src/bots/worker.ts).
    preset: { worker: { localQueue: { size: Math.max(concurrency * 2, 10) }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } },
    taskList: {
      minimal_send: async (payload) => {
        const { id } = payload as { id: number };
        const { rows } = await pool.query("select email, slack_channel, subject, body from minimal.notifications where id = $1", [id]);
        const n = rows[0] as { email: string; slack_channel: string; subject: string; body: string };
        await Promise.all([
          transport.send({ from, to: [n.email], subject: n.subject, text: n.body, messageId: `<minimal.${id}@bench.example>` }),
          poster.postMessage({ channel: n.slack_channel, text: `${n.subject}\n\n${n.body}` }),
        ]);
        await pool.query("update minimal.notifications set status = 'sent', sent_at = now() where id = $1", [id]);
      },
    },
  });
  const stop = async () => {
    await runner.stop();
    await transport.close?.();
    await pool.end();
    process.exit(0);
  };
  process.once("SIGTERM", () => void stop());
  process.stdout.write("ready\n");
}

main().catch((error) => {
  process.stderr.write(`minimal outbox worker failed: ${(error as Error).stack}\n`);
  process.exit(1);
});
