import { readFileSync } from "node:fs";
import path from "node:path";
import { configSchema } from "../../src/config/config";

/**
 * `.env.example` is what a new user reads to configure tidings: every
 * variable it documents must exist, every variable must be documented, and
 * the default it states must be the one the code applies (it once said the
 * internal team address was ops@localhost while the code used
 * internal-team@tidings.invalid).
 */

interface Documented {
  name: string;
  /** The commented assignment's value: an example. */
  example: string;
  /** The comment lines above it, joined. */
  description: string;
  line: number;
}

const file = path.resolve(__dirname, "../../.env.example");

/** Each `# NAME=value` line with the comment lines since the previous one (a blank line or a section rule starts afresh). */
function parseEnvExample(text: string): Documented[] {
  const documented: Documented[] = [];
  let comments: string[] = [];
  text.split("\n").forEach((raw, index) => {
    const line = raw.trimEnd();
    const assignment = /^#\s?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (assignment) {
      documented.push({ name: assignment[1]!, example: assignment[2]!, description: comments.join(" "), line: index + 1 });
      comments = [];
    } else if (line === "" || /^# ---/.test(line) || !line.startsWith("#")) {
      comments = [];
    } else {
      comments.push(line.replace(/^#\s?/, ""));
    }
  });
  return documented;
}

/** "Default: 54329 (...)" → "54329"; "Default: "a b"" → "a b"; "Default: unset (...)" → null. */
function statedDefault(description: string): string | null | undefined {
  const match = /Default: ("(?:[^"\\]|\\.)*"|\S+)/.exec(description);
  if (!match) return undefined;
  const value = match[1]!;
  if (value.startsWith('"')) return JSON.parse(value) as string;
  return value === "unset" ? null : value;
}

const documented = parseEnvExample(readFileSync(file, "utf8"));
const shape = configSchema.shape as Record<string, (typeof configSchema.shape)[keyof typeof configSchema.shape]>;
const defaults = configSchema.parse({}) as Record<string, unknown>;
const variables = Object.keys(shape);

it("documents every configuration variable once, and nothing else", () => {
  expect(documented.map((d) => d.name).sort()).toEqual([...variables].sort());
});

describe.each(variables)("%s", (name) => {
  const doc = () => documented.find((d) => d.name === name);

  it("states the default the code applies", () => {
    const stated = statedDefault(doc()?.description ?? "");
    expect(stated).toBeDefined();
    // Parsed with the variable's own schema, as loadConfig reads it from the environment.
    const parsed = stated === null ? { success: true as const, data: undefined } : shape[name]!.safeParse(stated);
    expect(parsed.success ? parsed.data : `${stated} (not even a valid value)`).toEqual(defaults[name]);
  });

  it("gives an example value the code accepts", () => {
    const parsed = shape[name]!.safeParse(doc()!.example);
    expect(parsed.success ? [] : parsed.error.issues.map((i) => i.message)).toEqual([]);
  });
});
