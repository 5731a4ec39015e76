import { readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import ts from "typescript";

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
  ["entities", "templates"], // templates: versioned content rendered at enqueue
  ["notification"],
  ["webhooks"], // status webhooks: a consumer of the notification streams
  ["auth"],
  ["http", "admin", "audit", "maintenance", "console"],
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

/** Every relative import of a source text, as TypeScript reads them: static, re-exports, dynamic import(), require(). */
function importsIn(file: string, text: string): string[] {
  const { importedFiles } = ts.preProcessFile(text, true, true);
  return importedFiles
    .map((f) => f.fileName)
    .filter((spec) => spec.startsWith("."))
    .map((spec) => path.resolve(path.dirname(file), spec));
}
const importsOf = (file: string) => importsIn(file, readFileSync(file, "utf8"));

/** The imports of one file that go up or sideways, by the layers above. */
function wrongImports(file: string, imports: string[]): string[] {
  const from = folderOf(file);
  return imports
    .filter((target) => folderOf(target) !== from && layerOf(folderOf(target)) >= layerOf(from))
    .map((target) => `${path.relative(SRC, file)} imports src/${folderOf(target)}`);
}

test("no folder of src/ imports one above or beside it", () => {
  expect(sourceFiles(SRC).flatMap((file) => wrongImports(file, importsOf(file)))).toEqual([]);
});

test("the check sees an import that goes up or sideways, in every form", () => {
  const engineFile = path.join(SRC, "streams", "example.ts");
  const upward = [
    'import { Streams } from "../notification/streams";',
    'export { x } from "../http/app";',
    'const m = await import("../admin/redrive");',
    'const c = require("../composition");',
    "import type { Db } from '../entities/entity.schemas';",
  ];
  for (const line of upward) expect({ line, wrong: wrongImports(engineFile, importsIn(engineFile, line)).length }).toEqual({ line, wrong: 1 });
  // Sideways: one channel importing another.
  const emailFile = path.join(SRC, "email", "example.ts");
  expect(wrongImports(emailFile, importsIn(emailFile, 'import { slackChannel } from "../slack/slack.channel";'))).toHaveLength(1);
  // Down is fine, and an import named in a comment is no import.
  expect(wrongImports(engineFile, importsIn(engineFile, 'import { sql } from "../db/database";\n// from "../http/app"'))).toEqual([]);
});
