import { spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

const root = path.resolve(__dirname, "../..");
/** How long a start that cannot listen may take to give up: a bound, not a wait. */
const EXIT_BOUND_MS = 45_000;

/** A loopback port held by this test for as long as it likes. */
async function occupyPort(): Promise<net.Server> {
  const server = net.createServer((socket) => socket.end("occupied\n"));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  return server;
}

async function freePort(): Promise<number> {
  const server = await occupyPort();
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** `node --import tsx src/main.ts` with this environment; resolves when it exits, fails the test if it does not within the bound. */
function start(env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += String(d)));
    child.stderr.on("data", (d) => (stderr += String(d)));
    const bound = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`tidings still running ${EXIT_BOUND_MS} ms after start:\n${stdout}\n${stderr}`));
    }, EXIT_BOUND_MS);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(bound);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("npm start when the API cannot listen", () => {
  let t: TestDatabase;
  let occupied: net.Server;
  let port: number;

  beforeAll(async () => {
    t = await createTestDatabase(2);
    occupied = await occupyPort();
    port = (occupied.address() as net.AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((resolve) => occupied.close(resolve));
    await t.close();
  });

  const serviceEnv = (extra: Record<string, string>): NodeJS.ProcessEnv => ({
    ...process.env,
    DATABASE_URL: t.url,
    RUN_WORKER: "false",
    LOG_LEVEL: "info",
    ...extra,
  });

  it("a port in use stops the process with exit 1 and one line naming the address and the reason", async () => {
    const { code, stdout, stderr } = await start(serviceEnv({ HOST: "127.0.0.1", PORT: String(port) }));
    expect(code).toBe(1);
    expect(stderr.split("\n").filter((l) => l !== "")).toEqual([
      `tidings failed to start: cannot listen on 127.0.0.1:${port}: address already in use (another process listens there: stop it, or set PORT)`,
    ]);
    expect(stdout).not.toMatch(/listening/);
    // The process that holds the port still answers: tidings took nothing from it.
    const answer = await new Promise<string>((resolve, reject) => {
      const socket = net.connect(port, "127.0.0.1");
      let text = "";
      socket.on("data", (d) => (text += String(d)));
      socket.on("end", () => resolve(text));
      socket.on("error", reject);
    });
    expect(answer).toBe("occupied\n");
  }, 60_000);

  it("a HOST that is not an address of this machine stops it the same way", async () => {
    // 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to a local interface.
    const { code, stdout, stderr } = await start(serviceEnv({ HOST: "192.0.2.1", PORT: String(port) }));
    expect(code).toBe(1);
    expect(stderr.split("\n").filter((l) => l !== "")).toEqual([
      `tidings failed to start: cannot listen on 192.0.2.1:${port}: address not available (HOST is not an address of this machine)`,
    ]);
    expect(stdout).not.toMatch(/listening/);
  }, 60_000);
});

describe("npm start on the embedded database when the API cannot listen", () => {
  let dataDir: string;
  let occupied: net.Server;

  beforeAll(async () => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "tidings-listen-"));
    chmodSync(dataDir, 0o755);
    occupied = await occupyPort();
  });
  afterAll(async () => {
    await new Promise((resolve) => occupied.close(resolve));
    rmSync(dataDir, { recursive: true, force: true });
  });

  it("stops the embedded PostgreSQL it started, and spends no development key on the failed start", async () => {
    const port = (occupied.address() as net.AddressInfo).port;
    const pgPort = await freePort();
    const env: NodeJS.ProcessEnv = { ...process.env, DATA_DIR: dataDir, EMBEDDED_PG_PORT: String(pgPort), PORT: String(port), LOG_LEVEL: "info" };
    delete env.DATABASE_URL;
    const { code, stdout, stderr } = await start(env);
    expect(code).toBe(1);
    expect(stderr.split("\n").filter((l) => l !== "")).toEqual([
      `tidings failed to start: cannot listen on 127.0.0.1:${port}: address already in use (another process listens there: stop it, or set PORT)`,
    ]);
    expect(stdout).toContain("using embedded PostgreSQL");
    expect(stdout).not.toMatch(/listening|development API key/);

    // The database server is gone (its pid file removed by a clean stop), and nothing answers on its port.
    expect(existsSync(path.join(dataDir, "pg", "postmaster.pid"))).toBe(false);
    const client = new pg.Client({ connectionString: `postgres://postgres:tidings@127.0.0.1:${pgPort}/postgres`, connectionTimeoutMillis: 5_000 });
    await expect(client.connect()).rejects.toThrow(/ECONNREFUSED/);
  }, 120_000);
});
