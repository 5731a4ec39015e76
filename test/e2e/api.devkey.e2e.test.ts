import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createTestDatabase, waitFor } from "../helpers/db";
import { freePort } from "../helpers/net";

const root = path.resolve(__dirname, "../..");
const KEY_LINE = /created a development API key with every scope \(no key existed\); it is shown only this once: (tdk_[A-Za-z0-9_-]{43})/;

interface Running {
  child: ChildProcess;
  output: () => string;
  url: string;
  stop(): Promise<number | null>;
}

async function start(env: NodeJS.ProcessEnv): Promise<Running> {
  const port = await freePort();
  let output = "";
  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    cwd: root,
    env: { ...env, PORT: String(port), LOG_LEVEL: "info", RUN_WORKER: "false" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.on("data", (d) => (output += String(d)));
  child.stderr.on("data", (d) => (output += String(d)));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`tidings exited early:\n${output}`);
      // The log line saying the API listens comes after the development key.
      return output.includes("tidings API listening");
    },
    { timeoutMs: 60_000, intervalMs: 200, what: "the API to listen" },
  );
  return {
    child,
    output: () => output,
    url,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    },
  };
}

describe("the development API key", () => {
  let dataDir: string;
  let running: Running | undefined;

  afterAll(async () => {
    await running?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("npm start on the embedded database prints one key, once, and it works", async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "tidings-devkey-"));
    chmodSync(dataDir, 0o755);
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(await freePort()) };
    delete env.DATABASE_URL;

    running = await start(env);
    const key = KEY_LINE.exec(running.output())?.[1];
    expect(key).toBeDefined();
    const authorized = await fetch(`${running.url}/v1/events`, { headers: { authorization: `Bearer ${key}` } });
    expect(authorized.status).toBe(200);
    expect((await fetch(`${running.url}/v1/events`)).status).toBe(401);
    const entity = await fetch(`${running.url}/v1/entities/dev-user`, {
      method: "PUT",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: JSON.stringify({ kind: "user", name: "Dev", email: "dev@example.com", preferences: { channels: ["email"] } }),
    });
    expect(entity.status).toBe(201);
    expect(await running.stop()).toBe(0);

    // A second start finds the key and prints nothing new; the key still works.
    running = await start(env);
    expect(running.output()).not.toMatch(/development API key/);
    expect((await fetch(`${running.url}/v1/entities/dev-user`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
    expect(await running.stop()).toBe(0);
    running = undefined;
  }, 150_000);

  it("with DATABASE_URL set, no key is created", async () => {
    const t = await createTestDatabase(2);
    try {
      running = await start({ ...process.env, DATABASE_URL: t.url });
      expect(running.output()).not.toMatch(/development API key/);
      expect(await running.stop()).toBe(0);
      running = undefined;
      const { rows } = await t.query("select count(*)::int as n from api.keys");
      expect(rows[0].n).toBe(0);
    } finally {
      await t.close();
    }
  }, 90_000);
});
