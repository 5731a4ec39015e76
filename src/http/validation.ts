import type { ZodError, ZodType, z } from "zod";
import { ValidationError } from "../errors/errors";

export type InputLocation = "body" | "query" | "path" | "header";

/** Say what to do instead, for fields that are known not to belong in the body. */
const FIELD_HINTS: Record<string, string> = {
  idempotencyKey: "unknown field; send the idempotency key in the Idempotency-Key header",
};

/** zod issues as `{path, message}`: each names the field; an unknown field is reported under its own name. */
export function issuesFrom(error: ZodError): { path: string; message: string }[] {
  return error.issues.flatMap((issue) => {
    const base = issue.path.map(String);
    if (issue.code === "unrecognized_keys") {
      return issue.keys.map((key) => ({
        path: [...base, key].join("."),
        message: Object.hasOwn(FIELD_HINTS, key) ? FIELD_HINTS[key]! : "unknown field",
      }));
    }
    return [{ path: base.join(".") || "(whole value)", message: issue.message }];
  });
}

const WHAT: Record<InputLocation, string> = {
  body: "request body",
  query: "query parameters",
  path: "path",
  header: "headers",
};

/** Parse one part of a request; a failure is a ValidationError naming each field and its problem. */
function unstorable(input: unknown): { path: string; message: string }[] {
  const issues: { path: string; message: string }[] = [];
  type N = { v: unknown; key: string | null; parent: N | null };
  const pathOf = (n: N, last?: string) => {
    const keys = last === undefined ? [] : [last];
    for (let x: N | null = n; x && x.key !== null; x = x.parent) keys.unshift(x.key);
    return keys.join(".") || "(whole value)";
  };
  const stack: N[] = [{ v: input, key: null, parent: null }];
  const bad = (s: string) =>
    s.includes("\u0000")
      ? "contains U+0000 (NUL), which cannot be stored"
      : /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s)
        ? "contains an unpaired surrogate, which cannot be stored"
        : null;
  while (stack.length > 0) {
    const n = stack.pop()!;
    const v = n.v;
    if (typeof v === "string") {
      const m = bad(v);
      if (m) issues.push({ path: pathOf(n), message: m });
    } else if (Array.isArray(v)) v.forEach((x, i) => stack.push({ v: x, key: String(i), parent: n }));
    else if (v !== null && typeof v === "object") {
      for (const [k, x] of Object.entries(v)) {
        const m = k === "__proto__" ? "__proto__ is not a field name" : bad(k);
        if (m) issues.push({ path: pathOf(n, k), message: m });
        stack.push({ v: x, key: k, parent: n });
      }
    }
  }
  return issues;
}

export function parseInput<S extends ZodType>(schema: S, input: unknown, where: InputLocation): z.output<S> {
  const parsed = schema.safeParse(input);
  const extra = unstorable(input);
  if (parsed.success && extra.length === 0) return parsed.data;
  const seen = new Set<string>();
  const issues = [...(parsed.success ? [] : issuesFrom(parsed.error)), ...extra]
    .map((i) => (where === "body" && i.path === "(whole value)" ? { ...i, path: "(body)" } : i))
    .filter((i) => !seen.has(i.path + i.message) && seen.add(i.path + i.message));
  throw ValidationError.fromIssues(WHAT[where], issues);
}
