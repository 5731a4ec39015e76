import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { createKeyCommand, EXEC_PREFIX_VARIABLE } from "../../src/auth/keyCommand";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { freePort } from "../helpers/net";

/**
 * With DATABASE_URL set (docker compose, your own PostgreSQL) no development
 * key is made: the start says how to make one, and that command works.
 */

const root = path.resolve(__dirname, "../..");
const HINT = /no active API key exists, so the API refuses every request; create one \(its secret is printed once\) with: ([^"\n]+)"/;

interface Running {
  url: string;
  output(): string;
  stop(): Promise<number | null>;
}

async function startTidings(env: NodeJS.ProcessEnv): Promise<Running> {
  const port = await freePort();
  let output = "";
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    cwd: root,
    env: { ...env, PORT: String(port), HOST: "127.0.0.1", LOG_LEVEL: "info", RUN_WORKER: "false" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout!.on("data", (d) => (output += String(d)));
  child.stderr!.on("data", (d) => (output += String(d)));
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`tidings exited early:\n${output}`);
      return output.includes("tidings API listening");
    },
    { timeoutMs: 60_000, intervalMs: 100, what: "the API to listen" },
  );
  return {
    url: `http://127.0.0.1:${port}`,
    output: () => output,
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      return new Promise((resolve) => child.once("exit", (code) => resolve(code)));
    },
  };
}

/** A shell command as an operator pastes it, in the repository, with this environment. */
function shell(command: string, env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("sh", ["-c", command], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += String(d)));
    child.stderr.on("data", (d) => (stderr += String(d)));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("npm start with DATABASE_URL and no API key", () => {
  let t: TestDatabase;
  let running: Running | undefined;

  beforeAll(async () => {
    t = await createTestDatabase(2);
  });
  afterAll(async () => {
    await running?.stop();
    await t.close();
  });

  it("logs the command that creates a key; that command, pasted, makes a key the API accepts", async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: t.url };
    delete env[EXEC_PREFIX_VARIABLE];
    running = await startTidings(env);
    const command = HINT.exec(running.output())?.[1];
    expect(command).toBe("npm run apikeys -- create --name my-first-key --scopes producer,reader,entities,admin");
    expect(running.output()).not.toMatch(/development API key/);

    const created = await shell(command!, env);
    expect(created.code).toBe(0);
    const secret = /secret: (tdk_[A-Za-z0-9_-]{43})/.exec(created.stdout)?.[1];
    expect(secret).toBeDefined();

    const entity = await fetch(`${running.url}/v1/entities/ada`, {
      method: "PUT",
      headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body: JSON.stringify({ kind: "user", name: "Ada", email: "ada@example.com", preferences: { channels: ["email"] } }),
    });
    expect(entity.status).toBe(201);
    expect((await fetch(`${running.url}/v1/events`, { headers: { authorization: `Bearer ${secret}` } })).status).toBe(200);
    expect(await running.stop()).toBe(0);

    // With a key, the next start has nothing to say about keys.
    running = await startTidings(env);
    expect(running.output()).not.toMatch(/API key/);
    expect(await running.stop()).toBe(0);
    running = undefined;
  }, 120_000);

  it("in the image the hint goes through docker compose, to the service docker-compose.yml runs tidings as", () => {
    const dockerfile = readFileSync(path.join(root, "Dockerfile"), "utf8");
    const prefix = new RegExp(`^ENV ${EXEC_PREFIX_VARIABLE}="([^"]+)"$`, "m").exec(dockerfile)?.[1];
    expect(prefix).toBe("docker compose exec tidings");
    const compose = parseYaml(readFileSync(path.join(root, "docker-compose.yml"), "utf8"));
    // `exec tidings` reaches the service built from this Dockerfile, which has the service login's DATABASE_URL.
    expect(compose.services.tidings.build).toBe(".");
    expect(compose.services.tidings.environment.DATABASE_URL).toMatch(/^postgres:\/\/tidings_app:/);
    // The README's docker section gives the same command.
    expect(readFileSync(path.join(root, "README.md"), "utf8")).toContain(createKeyCommand(prefix));
  });
});
