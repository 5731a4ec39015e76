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
        message: FIELD_HINTS[key] ?? "unknown field",
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
export function parseInput<S extends ZodType>(schema: S, input: unknown, where: InputLocation): z.output<S> {
  const parsed = schema.safeParse(input);
  if (parsed.success) return parsed.data;
  const issues = issuesFrom(parsed.error).map((i) =>
    where === "body" && i.path === "(whole value)" ? { ...i, path: "(body)" } : i,
  );
  throw new ValidationError(`invalid ${WHAT[where]}: ${issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`, issues);
}
