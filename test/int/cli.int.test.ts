import { execFile, spawnSync } from "node:child_process";
import path from "node:path";
import { createApiKey } from "../../src/auth/apiKeys";
import { enqueueNotification } from "../../src/notification/enqueue";
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import { createEntity } from "../helpers/tidings";

/**
 * What the command-line tools print, run as an operator runs them: piped
 * (tables whole, no escape codes), with --json (a listing is a JSON array of
 * its rows), and on a narrow terminal (a pseudo-terminal from util-linux's
 * `script`: one `field: value` block per row).
 */
const REPO = path.resolve(__dirname, "../..");
const ANSI = /\u001b\[/;

let t: TestDatabase;
let trackingId: string;

beforeAll(async () => {
  t = await createTestDatabase(4);
  await createApiKey(t.db, { name: "cli-test-key", scopes: ["reader", "producer"], createdBy: "test" });
  await createEntity(t, "cli-ada");
  ({ trackingId } = await enqueueNotification(t.db, { entityId: "cli-ada", subject: "For the CLI", text: "Hello." }));
});
afterAll(async () => {
  await t.close();
});

const toolEnv = (extra: NodeJS.ProcessEnv = {}) => ({ ...process.env, DATABASE_URL: t.url, LOG_LEVEL: "warn", FORCE_COLOR: undefined, ...extra });

function run(script: string, args: string[], extra: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ["--import", "tsx", `scripts/${script}.ts`, ...args], { cwd: REPO, env: toolEnv(extra), timeout: 60_000 }, (error, stdout, stderr) => {
      resolve({ code: error ? (typeof error.code === "number" ? error.code : 1) : 0, stdout, stderr });
    });
  });
}

/** The tool on a pseudo-terminal `columns` wide; what the terminal showed. */
function onTerminal(columns: number, script: string, args: string[], extra: NodeJS.ProcessEnv = {}): string {
  const command = `stty cols ${columns} rows 50; exec ${[process.execPath, "--import", "tsx", `scripts/${script}.ts`, ...args].join(" ")}`;
  const result = spawnSync("script", ["-qec", command, "/dev/null"], { cwd: REPO, env: toolEnv(extra), encoding: "utf8", timeout: 60_000 });
  if (result.status !== 0) throw new Error(`script exited ${result.status}: ${result.stdout}${result.stderr}`);
  return result.stdout.replace(/\r\n/g, "\n");
}
const hasScript = spawnSync("script", ["--version"]).status === 0;
const withTerminal = hasScript ? it : it.skip;

describe("piped", () => {
  it("apikeys list: the whole table, no escape codes; --json: an array of the keys", async () => {
    const table = await run("apikeys", ["list"]);
    expect(table).toMatchObject({ code: 0, stderr: "" });
    expect(table.stdout).toMatch(/│ id\s+│ name\s+│ scopes/);
    expect(table.stdout).toContain("cli-test-key");
    expect(table.stdout).not.toMatch(ANSI);
    const json = await run("apikeys", ["list", "--json"]);
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ name: "cli-test-key", scopes: ["reader", "producer"] })]);
  });

  it("audit notifications: a table; --json: an array of the rows", async () => {
    const table = await run("audit", ["notifications", "--entity", "cli-ada"]);
    expect(table.code).toBe(0);
    expect(table.stdout).toContain(trackingId);
    expect(table.stdout).toMatch(/│ requested_at\s+│/);
    expect(table.stdout).not.toMatch(ANSI);
    const json = await run("audit", ["notifications", "--entity", "cli-ada", "--json"]);
    expect(JSON.parse(json.stdout)).toEqual([expect.objectContaining({ tracking_id: trackingId, entity_id: "cli-ada" })]);
  });

  it("redrive list and stuck: --json is an array of the rows", async () => {
    const list = await run("redrive", ["list", "--notification", trackingId, "--json"]);
    expect(list.code).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([expect.objectContaining({ id: trackingId, stream: "notification.client_operations", concern: "notification_bot" })]);
    const stuck = await run("redrive", ["stuck", "--json"]);
    expect(JSON.parse(stuck.stdout)).toEqual([]);
    const table = await run("redrive", ["list", "--notification", trackingId]);
    expect(table.stdout).toMatch(/│ notification\.client_operations │/);
    expect(table.stdout).not.toMatch(ANSI);
  });
});

describe("on a terminal", () => {
  withTerminal("narrower than the table: one field: value block per row, headings bold; NO_COLOR: no escape codes", () => {
    const shown = onTerminal(60, "apikeys", ["list"]);
    expect(shown).not.toContain("│");
    expect(shown).toMatch(/-\[ 1 \]\n\u001b\[1mid\s+\u001b\[22m: [0-9a-f-]{36}\n\u001b\[1mname\s+\u001b\[22m: cli-test-key\n/);
    const plain = onTerminal(60, "audit", ["notifications", "--entity", "cli-ada"], { NO_COLOR: "1" });
    expect(plain).not.toMatch(ANSI);
    expect(plain).toContain(`tracking_id          : ${trackingId}`);
    expect(plain).toContain("(1 row)");
  });

  withTerminal("wide enough: the table", () => {
    const shown = onTerminal(250, "redrive", ["list", "--notification", trackingId], { NO_COLOR: "1" });
    expect(shown).toMatch(/│ notification\.client_operations │/);
  });
});
