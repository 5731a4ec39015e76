import { readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";

/**
 * The folders of src/ are layers: each may import from the layers below it,
 * never from one above or beside it (README "How it is built"). A new
 * channel is a folder at the channels' layer, registered in
 * src/notification/channels.ts.
 */
const LAYERS: string[][] = [
  ["util", "errors", "logging"],
  ["cli"], // how the command-line tools lay rows out
  ["config"],
  ["db"],
  ["streams"], // the stream engine
  ["bots"], // the bot runtime
  ["channels"], // what a channel is
  ["email", "slack"], // the channels
  ["entities"],
  ["notification"],
  ["auth"],
  ["http", "admin", "audit"],
  ["."], // main.ts and composition.ts: the composition root
];

const SRC = path.resolve(__dirname, "../../src");
const layerOf = (folder: string): number => {
  const index = LAYERS.findIndex((layer) => layer.includes(folder));
  if (index < 0) throw new Error(`src/${folder} is in no layer of test/unit/layers.unit.test.ts: place it`);
  return index;
};
const folderOf = (file: string): string => {
  const rel = path.relative(SRC, file);
  return rel.includes(path.sep) ? rel.split(path.sep)[0]! : ".";
};

function sourceFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name);
    return statSync(full).isDirectory() ? sourceFiles(full) : full.endsWith(".ts") ? [full] : [];
  });
}

/** Every relative import of a file: static, re-exports and dynamic import(). */
function importsOf(file: string): string[] {
  const text = readFileSync(file, "utf8");
  const found = [...text.matchAll(/(?:from|import)\s*\(?\s*"(\.{1,2}\/[^"]*)"/g)].map((m) => m[1]!);
  return found.map((spec) => path.resolve(path.dirname(file), spec));
}

test("no folder of src/ imports one above or beside it", () => {
  const wrong: string[] = [];
  for (const file of sourceFiles(SRC)) {
    const from = folderOf(file);
    for (const target of importsOf(file)) {
      const to = folderOf(target);
      if (to === from) continue;
      if (layerOf(to) >= layerOf(from)) wrong.push(`${path.relative(SRC, file)} imports src/${to}`);
    }
  }
  expect(wrong).toEqual([]);
});

test("the check sees an import that goes up", () => {
  // The engine importing the notification subsystem would be a violation.
  expect(layerOf("notification")).toBeGreaterThan(layerOf("streams"));
  expect(importsOf(path.join(SRC, "composition.ts")).map(folderOf)).toContain("notification");
});
