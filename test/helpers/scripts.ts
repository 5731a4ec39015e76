import { execFile } from "node:child_process";
import path from "node:path";

export interface ScriptResult {
  /** The exit code; -1 when the process had none (killed, timed out). */
  code: number;
  stdout: string;
  stderr: string;
}

const REPO = path.resolve(__dirname, "../..");

/** Run one of scripts/*.ts as a user runs it (its own process, from the repository), with this environment added. */
export function runScript(script: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<ScriptResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", `scripts/${script}.ts`, ...args],
      { cwd: REPO, env: { ...process.env, ...env }, timeout: timeoutMs },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}
