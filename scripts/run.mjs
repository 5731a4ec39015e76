// The npm scripts' one launcher (`npm run migrate`, `apikeys`, `audit`,
// `redrive`): from the TypeScript sources through tsx where it is installed
// (a development checkout), otherwise the compiled file under dist/ (a
// production install, `npm ci --omit=dev`, or the Docker image), so the same
// command works in both.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const [name, ...args] = process.argv.slice(2);
if (!name || !/^[a-z]+$/.test(name)) {
  process.stderr.write("usage: node scripts/run.mjs <script> [arguments]\n");
  process.exit(2);
}

let hasTsx = true;
try {
  createRequire(import.meta.url).resolve("tsx");
} catch {
  hasTsx = false;
}
const compiled = path.join(root, "dist", "scripts", `${name}.js`);
if (!hasTsx && !existsSync(compiled)) {
  process.stderr.write(`neither tsx (npm ci) nor ${path.relative(root, compiled)} (npm run build) is here to run ${name}\n`);
  process.exit(1);
}
const command = hasTsx ? [process.execPath, "--import", "tsx", path.join(root, "scripts", `${name}.ts`)] : [process.execPath, compiled];
const result = spawnSync(command[0], [...command.slice(1), ...args], { stdio: "inherit" });
if (result.error) throw result.error;
process.exit(result.status ?? 128 + (os.constants.signals[result.signal] ?? 0));
