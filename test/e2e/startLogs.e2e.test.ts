import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { waitFor } from "../helpers/db";
import { freePort } from "../helpers/net";

const root = path.resolve(__dirname, "../..");

/** What `npm start` logs on a fresh default start, piped (as Docker or a log collector reads it). */
describe("the log of a default start", () => {
  let child: ChildProcess | undefined;
  let dataDir: string;
  let stdout = "";
  let stderr = "";

  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((resolve) => child!.once("exit", resolve));
    }
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("is JSON lines with no warning, names the development key, and has an access line per request", async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "tidings-logs-"));
    chmodSync(dataDir, 0o755);
    const [port, pgPort] = [await freePort(), await freePort()];
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port), EMBEDDED_PG_PORT: String(pgPort), DATA_DIR: dataDir, LOG_LEVEL: "info" };
    delete env.DATABASE_URL;
    child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    child.stdout!.on("data", (d) => (stdout += String(d)));
    child.stderr!.on("data", (d) => (stderr += String(d)));
    const lines = () =>
      stdout
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { level: number; msg: string; requestId?: string });

    await waitFor(
      async () => {
        if (child!.exitCode !== null) throw new Error(`tidings exited early:\n${stdout}${stderr}`);
        return stdout.includes("tidings API listening");
      },
      { timeoutMs: 60_000, intervalMs: 200, what: "the API to listen" },
    );
    const answer = await fetch(`http://127.0.0.1:${port}/openapi.json`, { headers: { "x-request-id": "e2e-logs-1" } });
    expect(answer.headers.get("x-request-id")).toBe("e2e-logs-1");
    const access = await waitFor(async () => lines().find((l) => l.requestId === "e2e-logs-1"), { what: "the access log line" });
    expect(access.msg).toMatch(/^GET \/openapi\.json 200 \d+ms$/);

    child.kill("SIGTERM");
    expect(await new Promise((resolve) => child!.once("exit", resolve))).toBe(0);
    expect(stderr).toBe("");
    // Every line is JSON (lines() throws otherwise), and nothing at warn (40) or above.
    expect(lines().filter((l) => l.level >= 40)).toEqual([]);
    expect(lines().map((l) => l.msg)).toEqual(expect.arrayContaining([expect.stringMatching(/development API key .* shown only this once: tdk_/)]));
  }, 90_000);
});
