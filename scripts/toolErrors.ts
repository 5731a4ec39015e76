import { ConfigError } from "../src/config/config";
import { TidingsError, ValidationError } from "../src/errors/errors";

/** The exit code of a refusal or bad input; 1 is kept for crashes. */
export const EXIT_REFUSED = 2;

/**
 * How the command-line tools (npm run redrive, erase, retention) end on an
 * error: a refusal or bad input exits 2 with its message (and, with --json,
 * `{"error": {kind, message, issues}}` on stdout); anything else is a crash,
 * exit 1 with the stack.
 */
export function reportToolError(tool: string, error: unknown, json: boolean | undefined): void {
  if (error instanceof TidingsError || error instanceof ConfigError) {
    const issues = error instanceof ValidationError ? error.issues : [];
    if (json) process.stdout.write(`${JSON.stringify({ error: { kind: "kind" in error ? error.kind : "config", message: error.message, issues } }, null, 2)}\n`);
    process.stderr.write(`${tool}: ${error.message}\n`);
    process.exitCode = EXIT_REFUSED;
    return;
  }
  process.stderr.write(`${tool}: ${(error as Error)?.stack ?? String(error)}\n`);
  process.exitCode = 1;
}
