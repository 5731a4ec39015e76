import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const root = path.resolve(__dirname, "../..");
const PASSWORD = "s3cret-Pa55word";

/** A loopback port nothing listens on: bound, then released, so a connect there is refused at once. */
async function closedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** `npx tsx src/main.ts` as a user runs it, with only this environment; resolves when it exits. */
function start(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn("npx", ["tsx", "src/main.ts"], {
      cwd: root,
      env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += String(d)));
    child.stderr.on("data", (d) => (stderr += String(d)));
    child.on("error", reject);
    child.on("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

describe("npm start with an unreachable database", () => {
  let dataDir: string;
  beforeAll(() => {
    dataDir = mkdtempSync(path.join(os.tmpdir(), "tidings-nodb-"));
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it("prints one line naming the database (host, port, database; password hidden) and exits non-zero", async () => {
    const port = await closedPort();
    const url = `postgres://tidings_user:${PASSWORD}@127.0.0.1:${port}/tidings_db`;
    const { code, stdout, stderr } = await start({ DATABASE_URL: url, DATA_DIR: dataDir, LOG_LEVEL: "info" });

    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    const lines = stderr.split("\n").filter((l) => l !== "");
    expect(lines).toEqual([
      `tidings failed to start: cannot connect to the database at postgres://tidings_user:***@127.0.0.1:${port}/tidings_db: connect ECONNREFUSED 127.0.0.1:${port}`,
    ]);
    expect(stderr + stdout).not.toContain(PASSWORD);
    expect(stderr).not.toMatch(/\n\s+at /);
  }, 60_000);

  it("a malformed URL with a password is refused by the configuration check without printing the password", async () => {
    const { code, stdout, stderr } = await start({ DATABASE_URL: `postgres//tidings_user:${PASSWORD}@127.0.0.1:5432/tidings_db`, DATA_DIR: dataDir });
    expect(code).toBe(2);
    expect(stderr.trim()).toBe('configuration error: DATABASE_URL must be a postgres:// connection string (got "postgres//tidings_user:***@127.0.0.1:5432/tidings_db")');
    expect(stderr + stdout).not.toContain(PASSWORD);
  }, 60_000);
});
