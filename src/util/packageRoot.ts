import { existsSync } from "node:fs";
import path from "node:path";

/**
 * The folder that holds package.json, found from a module's own folder: the
 * same answer from src/ (run by tsx) and from its compiled copy in dist/src/
 * (npm run build), so files beside package.json (migrations/) are found from both.
 */
export function packageRoot(from: string): string {
  for (let dir = path.resolve(from); ; dir = path.dirname(dir)) {
    if (existsSync(path.join(dir, "package.json"))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json in ${from} or any folder above it`);
  }
}
