/**
 * Drive test/fixtures/faultPostgres.ts: a throwaway PostgreSQL server of the
 * fault tests' own, to restart mid-flow without touching the suite's shared
 * server or the machine's.
 */
import { spawn, type ChildProcess } from "node:child_process";
import path from "node:path";
import { waitFor } from "./db";

export interface ThrowawayPostgres {
  port: number;
  /** URL of the database `tidings_fault` (superuser). */
  url: string;
  /** Fast shutdown: every connection is cut, open transactions roll back. */
  stop(): Promise<number>;
  start(): Promise<number>;
  /** Stop then start; resolves when the server accepts connections again, with how long it was gone. */
  restart(): Promise<{ downMs: number }>;
  /** Stop the server and remove its data directory. */
  destroy(): Promise<void>;
}

export async function startThrowawayPostgres(): Promise<ThrowawayPostgres> {
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", path.resolve(__dirname, "../fixtures/faultPostgres.ts")], {
    stdio: ["pipe", "pipe", "pipe"],
    cwd: path.resolve(__dirname, "../.."),
  });
  let output = "";
  let consumed = 0;
  child.stdout!.on("data", (d) => (output += String(d)));
  child.stderr!.on("data", (d) => (output += String(d)));
  let exited = false;
  child.once("exit", () => (exited = true));

  /** The next line starting with `word` after the ones already read. */
  const expectLine = async (word: string, timeoutMs = 60_000): Promise<string> =>
    waitFor(
      async () => {
        const rest = output.slice(consumed);
        const match = new RegExp(`^(${word}|ERROR)(?: (.*))?$`, "m").exec(rest);
        if (!match) {
          if (exited) throw new Error(`fault postgres exited:\n${output.slice(-2000)}`);
          return undefined;
        }
        consumed += match.index + match[0].length;
        if (match[1] === "ERROR") throw new Error(`fault postgres: ${match[2]}`);
        return match[2] ?? "";
      },
      { timeoutMs, intervalMs: 20, what: `fault postgres to answer ${word}` },
    );
  const command = async (line: string, answer: string) => {
    child.stdin!.write(`${line}\n`);
    return Number(await expectLine(answer));
  };

  const port = Number(await expectLine("READY"));
  const self: ThrowawayPostgres = {
    port,
    url: `postgres://postgres:fault@127.0.0.1:${port}/tidings_fault`,
    stop: () => command("stop", "STOPPED"),
    start: () => command("start", "STARTED"),
    async restart() {
      const started = Date.now();
      await self.stop();
      await self.start();
      return { downMs: Date.now() - started };
    },
    async destroy() {
      if (exited) return;
      child.stdin!.write("destroy\n");
      await waitFor(async () => exited, { timeoutMs: 30_000, what: "fault postgres to stop" });
    },
  };
  return self;
}
