import "dotenv/config";
import { runAudit } from "../src/audit/cli";

/** `npm run audit -- <command>`: see `npm run audit -- --help` and docs/audit.md. */
runAudit(process.argv.slice(2), {
  out: (text) => process.stdout.write(`${text}\n`),
  err: (text) => process.stderr.write(`${text}\n`),
}).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
