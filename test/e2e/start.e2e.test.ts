import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { createDb, createPool } from "../../src/db/database";
import { putEntity } from "../../src/entities/entity.repository";
import { waitFor } from "../helpers/db";
import { freePort } from "../helpers/net";
import { Streams } from "../../src/notification/streams";
import { WebhookStreams } from "../../src/webhooks/webhook.streams";

const root = path.resolve(__dirname, "../..");

/** `npm start` as a new user runs it: no DATABASE_URL, so the embedded PostgreSQL under DATA_DIR. */
describe("npm start with no DATABASE_URL", () => {
  let child: ChildProcess | undefined;
  let dataDir: string;
  let output = "";

  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((resolve) => child!.once("exit", resolve));
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("starts the embedded database, applies migrations and answers /healthz and /readyz", async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "tidings-start-"));
    chmodSync(dataDir, 0o755);
    const [port, pgPort] = [await freePort(), await freePort()];
    // As the README's try-it section: the local Slack sink answers channel_not_found for #gone.
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PORT: String(port),
      EMBEDDED_PG_PORT: String(pgPort),
      DATA_DIR: dataDir,
      LOG_LEVEL: "info",
      SLACK_SINK_MISSING_CHANNELS: "#gone",
    };
    delete env.DATABASE_URL;
    child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d) => (output += String(d)));
    child.stderr!.on("data", (d) => (output += String(d)));

    const health = await waitFor(
      async () => {
        if (child!.exitCode !== null) throw new Error(`tidings exited early:\n${output}`);
        try {
          const res = await fetch(`http://127.0.0.1:${port}/healthz`);
          return res.ok ? res.json() : undefined;
        } catch {
          return undefined;
        }
      },
      { timeoutMs: 60_000, intervalMs: 200, what: "/healthz" },
    );
    expect(health).toEqual({ status: "ok" });
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`);
    expect(ready.status).toBe(200);
    expect(output).toContain(`using embedded PostgreSQL with data in ${path.join(dataDir, "pg")}`);

    const client = new pg.Client({ connectionString: `postgres://postgres:tidings@127.0.0.1:${pgPort}/tidings` });
    await client.connect();
    try {
      const { rows } = await client.query("select count(*)::int as n from tidings.migrations");
      expect(rows[0].n).toBeGreaterThanOrEqual(3);
      // Every stream the code knows was declared by the migrations.
      const streams = await client.query("select name from tidings.streams order by name");
      expect(streams.rows.map((r) => r.name)).toEqual([...Object.values(Streams), ...Object.values(WebhookStreams)].sort());
    } finally {
      await client.end();
    }

    // With no SMTP or Slack settings the default run still works end to end:
    // email and Slack go to local sinks under DATA_DIR, and the log says where.
    const outbox = path.join(dataDir, "outbox");
    expect(output).toContain(path.join(outbox, "email"));
    expect(output).toContain(path.join(outbox, "slack.jsonl"));
    const pool = createPool(`postgres://postgres:tidings@127.0.0.1:${pgPort}/tidings`, 2);
    try {
      await putEntity(
        createDb(pool),
        "demo",
        {
          kind: "user",
          name: "Demo",
          email: "demo@example.com",
          slack: "#general",
          preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all" },
        },
        "e2e",
      );
      const { rows } = await pool.query("select notification.send_notification_to_entity('demo', 'Hello from the default run', 'It works.') as id");
      const id = rows[0].id as string;
      const outcome = await waitFor(
        async () => {
          const r = await pool.query("select type from notification.events where id = $1 and type like 'Sent%' order by position desc limit 1", [id]);
          return r.rows[0]?.type as string | undefined;
        },
        { timeoutMs: 30_000, what: "the outcome in the default run" },
      );
      expect(outcome).toBe("SentOnAllPreparedChannelsEvent");
      const emails = readdirSync(path.join(outbox, "email")).filter((f) => f.endsWith(".eml"));
      expect(emails.map((f) => readFileSync(path.join(outbox, "email", f), "utf8")).join("\n")).toContain("Subject: Hello from the default run");
      expect(readFileSync(path.join(outbox, "slack.jsonl"), "utf8")).toContain("It works.");

      // The README's fallback: Slack first, its channel gone, so email delivers.
      await putEntity(
        createDb(pool),
        "flo",
        {
          kind: "user",
          name: "Flo",
          email: "flo@example.com",
          slack: "#gone",
          preferences: { channels: ["slack", "email"], optedOut: [], delivery: "fallback" },
        },
        "e2e",
      );
      const fell = (await pool.query("select notification.send_notification_to_entity('flo', 'Falls back to email', 'Slack is gone.') as id")).rows[0].id as string;
      const view = await waitFor(
        async () => {
          const r = await pool.query("select payload from notification.views where id = $1 order by position desc limit 1", [fell]);
          return r.rows[0]?.payload.status === "sent" ? r.rows[0].payload : undefined;
        },
        { timeoutMs: 30_000, what: "the fallback to be sent" },
      );
      expect(view.outcome.deliveredBy).toBe("email");
      expect(view.channels.map((c: { channel: string; status: string }) => `${c.channel} ${c.status}`)).toEqual(["slack failed", "email sent"]);
    } finally {
      await pool.end();
    }

    child.kill("SIGTERM");
    const code = await new Promise((resolve) => child!.once("exit", resolve));
    expect(code).toBe(0);
  }, 90_000);
});
