import { isUtf8 } from "node:buffer";
import fc from "fast-check";
import { EntityInput } from "../../src/entities/entity.schemas";
import { SendNotificationBody } from "../../src/http/schemas";

/**
 * Malformed requests for the HTTP API, and the means to send them and judge
 * the answers (test/int/api.fuzz.int.test.ts). A probe says what it sends and
 * what a correct refusal looks like: the statuses allowed, and what the
 * problem document must name (field paths in `errors`, words in
 * title/detail). Generators derive malformed bodies from valid ones, and
 * record which fields they broke, so the expectation does not come from the
 * code under test.
 */

/** JSON as fast-check generates it. */
export type Json = fc.JsonValue;

export interface Expect {
  /** Any of these statuses is right. */
  status: readonly number[];
  /** Each must match the problem's title, detail or one of its `errors` (path: message). */
  mentions?: readonly RegExp[];
  /** Each must be the path of an `errors` entry, or the parent of one (`channels` for `channels.0`). */
  paths?: readonly string[];
  /** At least one of these must be named as `paths` are. */
  anyPath?: readonly string[];
  /** The problem type's last part, e.g. `malformed-json`. */
  problemType?: string;
  /** Response headers that must be present and match. */
  headers?: Record<string, RegExp>;
  /** Extension members the problem must carry, e.g. requiredScope. */
  members?: Record<string, unknown>;
}

export interface Probe {
  /** What the probe tests, for the failure report. */
  label: string;
  method: string;
  path: string;
  headers?: Record<string, string>;
  /** A string is sent as UTF-8 (fetch replaces lone surrogates: use bytes to send exactly). */
  body?: string | Uint8Array;
  expect: Expect;
}

export interface Answer {
  status: number;
  contentType: string;
  headers: Headers;
  text: string;
  json: any;
  ms: number;
}

export const BODY_LIMIT = 256 * 1024;
export const PROBLEM_URN = "urn:tidings:problem:";

// --- Sending and judging --------------------------------------------------------

export async function send(baseUrl: string, probe: Probe, timeoutMs: number): Promise<Answer> {
  const started = Date.now();
  const res = await fetch(baseUrl + probe.path, {
    method: probe.method,
    headers: probe.headers,
    body: probe.body,
    redirect: "manual",
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  const contentType = res.headers.get("content-type") ?? "";
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, contentType, headers: res.headers, text, json, ms: Date.now() - started };
}

function named(errors: { path: string }[], path: string): boolean {
  return errors.some((e) => e.path === path || e.path.startsWith(`${path}.`));
}

/** Why the answer is wrong for the probe, or null when it is right. */
export function judge(probe: Probe, answer: Answer): string | null {
  const { expect: want } = probe;
  if (answer.status >= 500) return `a ${answer.status}: bad input must be refused with a 4xx`;
  if (!want.status.includes(answer.status)) return `status ${answer.status}, expected ${want.status.join(" or ")}`;
  for (const [name, pattern] of Object.entries(want.headers ?? {})) {
    const value = answer.headers.get(name);
    if (value === null || !pattern.test(value)) return `header ${name} is ${JSON.stringify(value)}, expected ${pattern}`;
  }
  if (answer.status < 400) {
    return answer.status === 204 || /^application\/json(;|$)/.test(answer.contentType) ? null : `a ${answer.status} answered as ${JSON.stringify(answer.contentType)}, not JSON`;
  }

  if (!/^application\/problem\+json(;|$)/.test(answer.contentType)) {
    return `a ${answer.status} answered as ${JSON.stringify(answer.contentType)}, not application/problem+json`;
  }
  const p = answer.json as Record<string, unknown> | undefined;
  if (!p || typeof p !== "object") return "the problem document is not a JSON object";
  if (p.status !== answer.status) return `problem.status ${String(p.status)} differs from the HTTP status`;
  if (typeof p.type !== "string" || !p.type.startsWith(PROBLEM_URN)) return `problem.type ${JSON.stringify(p.type)} is not a tidings problem URN`;
  if (want.problemType && p.type !== PROBLEM_URN + want.problemType) return `problem.type ${p.type}, expected ${PROBLEM_URN}${want.problemType}`;
  if (typeof p.title !== "string" || p.title === "") return "problem.title is missing";
  if (typeof p.detail !== "string" || p.detail === "") return "problem.detail is missing";
  const errors = p.errors === undefined ? [] : p.errors;
  if (!Array.isArray(errors)) return "problem.errors is not an array";
  for (const e of errors) {
    if (typeof e?.path !== "string" || typeof e?.message !== "string" || e.message === "") {
      return `problem.errors has an entry without a string path and message: ${JSON.stringify(e)}`;
    }
  }
  const said = [p.title, p.detail, ...errors.map((e: { path: string; message: string }) => `${e.path}: ${e.message}`)].join("\n");
  for (const pattern of want.mentions ?? []) {
    if (!pattern.test(said)) return `the problem does not name the problem (${pattern} not in title, detail or errors)`;
  }
  for (const path of want.paths ?? []) {
    if (!named(errors, path)) return `problem.errors does not name ${JSON.stringify(path)}`;
  }
  if (want.anyPath && want.anyPath.length > 0 && !want.anyPath.some((path) => named(errors, path))) {
    return `problem.errors names none of ${JSON.stringify(want.anyPath)}`;
  }
  for (const [member, value] of Object.entries(want.members ?? {})) {
    if (JSON.stringify(p[member]) !== JSON.stringify(value)) return `problem.${member} is ${JSON.stringify(p[member])}, expected ${JSON.stringify(value)}`;
  }
  return null;
}

function preview(value: string | Uint8Array | undefined, max = 160): string {
  if (value === undefined) return "(none)";
  const text = typeof value === "string" ? value : isUtf8(value) ? Buffer.from(value).toString("utf8") : `(not UTF-8, as latin1) ${Buffer.from(value).toString("latin1")}`;
  const shown = JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
  return text.length > max ? `${shown} (${text.length} chars)` : shown;
}

export function describeFailure(probe: Probe, answer: Answer | null, reason: string): string {
  // Test keys are secrets all the same: not printed.
  const headers = Object.entries(probe.headers ?? {})
    .map(([name, value]) => `${name}: ${preview(value.replace(/tdk_[A-Za-z0-9_-]{43}/g, "tdk_<test key>"), 60)}`)
    .join(", ");
  const got = answer ? `→ ${answer.status} ${answer.contentType || "(no content-type)"} ${preview(answer.text, 300)}` : "→ no answer";
  return `[${probe.label}] ${probe.method} ${preview(probe.path, 100)}${headers ? ` {${headers}}` : ""} body=${preview(probe.body)}\n    ${got}\n    ${reason}`;
}

/** The failures of a run as one message: how many, then the first `max` in full. */
export function failureReport(failures: readonly string[], total: number, max = 40): string {
  const shown = failures.slice(0, max).join("\n\n");
  const more = failures.length > max ? `\n\n…and ${failures.length - max} more` : "";
  return `${failures.length} of ${total} requests were not answered as they should be:\n\n${shown}${more}`;
}

export interface RunResult {
  failures: string[];
  answers: Array<{ probe: Probe; answer: Answer }>;
}

/** Send every probe (`concurrency` at a time) and judge each answer; a request that does not answer in time is a hang. */
export async function runProbes(baseUrl: string, probes: readonly Probe[], options: { concurrency?: number; timeoutMs?: number } = {}): Promise<RunResult> {
  const { concurrency = 6, timeoutMs = 15_000 } = options;
  const result: RunResult = { failures: [], answers: [] };
  let next = 0;
  const worker = async () => {
    while (next < probes.length) {
      const probe = probes[next++]!;
      let answer: Answer;
      try {
        answer = await send(baseUrl, probe, timeoutMs);
      } catch (error) {
        const e = error as Error & { cause?: Error };
        const hang = e.name === "TimeoutError";
        result.failures.push(describeFailure(probe, null, hang ? `no answer within ${timeoutMs} ms (hang)` : `request failed: ${e.message} ${e.cause?.message ?? ""}`));
        continue;
      }
      result.answers.push({ probe, answer });
      const reason = judge(probe, answer);
      if (reason) result.failures.push(describeFailure(probe, answer, reason));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return result;
}

// --- What the server makes of a body ---------------------------------------------

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Paths of strings (values or keys) PostgreSQL cannot store in text/jsonb:
 * NUL, and lone surrogates (jsonb refuses the \ud800 escape JSON.stringify
 * writes for them). Iterative: bodies may be nested thousands deep.
 */
export function unstorablePaths(value: unknown): string[] {
  interface Node {
    v: unknown;
    key: string | null;
    parent: Node | null;
  }
  const pathOf = (node: Node, last?: string): string => {
    const keys = last === undefined ? [] : [last];
    for (let n: Node | null = node; n && n.key !== null; n = n.parent) keys.unshift(n.key);
    return keys.join(".") || "(body)";
  };
  const found: string[] = [];
  const stack: Node[] = [{ v: value, key: null, parent: null }];
  const bad = (s: string) => s.includes("\u0000") || LONE_SURROGATE.test(s);
  while (stack.length > 0) {
    const node = stack.pop()!;
    const { v } = node;
    if (typeof v === "string") {
      if (bad(v)) found.push(pathOf(node));
    } else if (Array.isArray(v)) {
      v.forEach((item, i) => stack.push({ v: item, key: String(i), parent: node }));
    } else if (v !== null && typeof v === "object") {
      for (const [k, item] of Object.entries(v)) {
        if (bad(k)) found.push(pathOf(node, k));
        stack.push({ v: item, key: k, parent: node });
      }
    }
  }
  return found;
}

export type BodyTarget = "notification" | "entity";
const SCHEMAS = { notification: SendNotificationBody, entity: EntityInput } as const;

/**
 * The refusal a JSON body must get, judged as the API's contract says
 * (docs/api.md): no body, not JSON (body-parser's strict mode takes only
 * objects and arrays; a leading BOM is ignored as RFC 8259 allows), not an
 * object, a field that does not fit, or text PostgreSQL cannot store.
 * Null when the body is valid.
 */
export function expectedRefusal(target: BodyTarget, bytes: Uint8Array): Expect | null {
  if (bytes.length === 0) return { status: [400], mentions: [/JSON/] };
  if (bytes.length > BODY_LIMIT) return { status: [413], problemType: "payload-too-large", mentions: [/limit/] };
  const text = Buffer.from(bytes)
    .toString("utf8")
    .replace(/^\ufeff/, "");
  const first = /^[ \t\n\r]*(.)/s.exec(text)?.[1];
  let value: unknown;
  try {
    if (first !== "{" && first !== "[") throw new Error("strict");
    value = JSON.parse(text);
  } catch {
    return { status: [400], problemType: "malformed-json", mentions: [/JSON/] };
  }
  const unstorable = unstorablePaths(value);
  if (Array.isArray(value)) return { status: [400], anyPath: ["(body)", ...unstorable] };
  const parsed = SCHEMAS[target].safeParse(value);
  if (!parsed.success) {
    const paths = parsed.error.issues.flatMap((i) => (i.code === "unrecognized_keys" ? i.keys.map((k) => [...i.path, k].join(".")) : [i.path.join(".") || "(body)"]));
    // With text that cannot be stored as well, a server may report either kind first: one named is enough.
    return unstorable.length > 0 ? { status: [400], anyPath: [...paths, ...unstorable] } : { status: [400], problemType: "validation-failed", paths: [...new Set(paths)] };
  }
  if (unstorable.length > 0) return { status: [400], anyPath: unstorable };
  return null;
}

// --- Characters -------------------------------------------------------------------

/** Characters that break naive handling: NUL and controls, lone surrogates, invisible and bidi marks, BOM, separators. */
export const NASTY_CHARS = [
  "\u0000",
  "\u0001",
  "\u001f",
  "\u007f",
  "\u0085",
  "\ud800",
  "\udbff",
  "\udc00",
  "\udfff",
  "\u200b",
  "\u200c",
  "\u200d",
  "\u200e",
  "\u200f",
  "\u202a",
  "\u202e",
  "\u2066",
  "\u2069",
  "\ufeff",
  "\u00a0",
  "\u2028",
  "\u2029",
  "\ufffe",
  "\uffff",
  "\ufffd",
  '"',
  "\\",
  "/",
  "'",
  "`",
  "%",
  "&",
  "<",
  ">",
  "{",
  "}",
  "[",
  "]",
  ".",
  ":",
  "😀",
  "é",
  "e\u0301",
  "Ω",
  "中",
  "\u0000\u0000",
] as const;

const printableAscii = fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c));
export const nastyUnit = fc.oneof({ arbitrary: printableAscii, weight: 3 }, { arbitrary: fc.constantFrom(...NASTY_CHARS), weight: 2 });
export const nastyString = (constraints: { minLength?: number; maxLength?: number } = {}) => fc.string({ unit: nastyUnit, ...constraints });

/** Characters PostgreSQL refuses in text: what `unstorable` mutations insert. */
const UNSTORABLE = ["\u0000", "\ud800", "\udbff", "\udc00", "\udfff"] as const;

// --- Valid bodies -------------------------------------------------------------------

const graphemeText = (maxLength: number) => fc.string({ unit: "grapheme", minLength: 1, maxLength }).filter((s) => s.trim().length > 0 && unstorablePaths(s).length === 0);

const entityIdArb = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9._:@-]{0,40}$/);
const tagName = fc.stringMatching(/^[A-Za-z0-9_.:-]{1,20}$/);

export const validNotification: fc.Arbitrary<Record<string, Json>> = fc.record(
  {
    entityId: entityIdArb,
    subject: graphemeText(60),
    text: graphemeText(200),
    html: fc.string({ maxLength: 80 }).map((s) => `<p>${s.replace(/[\\"]/g, "")}</p>`),
    markdown: graphemeText(80),
    channels: fc.shuffledSubarray(["email", "slack"], { minLength: 1 }),
    tags: fc.dictionary(tagName, fc.string({ maxLength: 30 }), { maxKeys: 5 }),
  },
  { requiredKeys: ["entityId", "subject", "text"] },
);

export const validEntity: fc.Arbitrary<Record<string, Json>> = fc.record(
  {
    kind: fc.constantFrom("user", "team", "service"),
    name: graphemeText(60),
    email: fc.oneof(fc.constant(null), fc.constantFrom("ada@example.com", "ops.team+alerts@example.org", "x@sub.example.co.uk")),
    slack: fc.oneof(fc.constant(null), fc.constantFrom("#general", "#ops-alerts", "U0ADA0001", "C0123ABC")),
    preferences: fc.record(
      {
        channels: fc.shuffledSubarray(["email", "slack"]),
        optedOut: fc.shuffledSubarray(["email", "slack"]),
        delivery: fc.constantFrom("all", "first"),
      },
      { requiredKeys: ["channels"] },
    ),
  },
  { requiredKeys: ["kind", "name", "preferences"] },
);

// --- Mutations of valid bodies ------------------------------------------------------

const smallJson = fc.jsonValue({ maxDepth: 2, stringUnit: nastyUnit });
const notAString = fc.oneof(
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.constant(null),
  fc.array(smallJson, { maxLength: 3 }),
  fc.dictionary(nastyString({ maxLength: 6 }), smallJson, { maxKeys: 3 }),
);
const notAStringNorNull = notAString.filter((v) => v !== null);
const notAnArray = fc.oneof(
  fc.constantFrom("email", "email,slack", ""),
  fc.integer(),
  fc.boolean(),
  fc.constant(null),
  fc.dictionary(fc.string({ maxLength: 5 }), smallJson, { maxKeys: 2 }),
);
const notAnObject = fc.oneof(nastyString({ maxLength: 10 }), fc.integer(), fc.boolean(), fc.constant(null), fc.array(smallJson, { maxLength: 3 }));
const badChannel = fc.oneof(fc.constantFrom("fax", "sms", "EMAIL", "Email", " email", "slack ", "", "e-mail", "email\u200b", "slack\u0000"), notAString);
const badChannelList = (emptyAllowed: boolean) =>
  fc.oneof(
    notAnArray,
    fc.array(badChannel, { minLength: 1, maxLength: 2 }),
    fc.constantFrom<Json>(["email", "email"], ["slack", "slack"], ["email", "slack", "email"], ...(emptyAllowed ? [] : [[]])),
  );
const badTags = fc.oneof(
  notAnObject,
  fc.constantFrom<Json>(
    { "": "v" },
    { "bad name": "v" },
    { ü: "v" },
    { "tag\u200b": "v" },
    { [`t${"a".repeat(64)}`]: "v" },
    { k: 1 },
    { k: null },
    { k: { nested: "v" } },
    { k: ["v"] },
    { k: "v".repeat(257) },
    Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`t${i}`, "v"])),
  ),
);
const badEntityId = fc.oneof(
  notAString,
  fc.constantFrom("", "-ada", "_ada", ".ada", "a b", "ada/1", "ada#1", "ada?x", "\u200bada", "ada\u200f", "\u202eada", "\ufeffada", "ad\u00e9", "a".repeat(201)),
);
const badKind = fc.oneof(notAString, fc.constantFrom("robot", "User", "USER", "", "user ", "team\u200b", "service\u0000"));
const badDelivery = fc.oneof(notAString, fc.constantFrom("some", "ALL", "", "first ", "all\u0000"));
const badEmail = fc.oneof(
  notAStringNorNull,
  fc.constantFrom(
    "",
    "no-at-sign",
    "two@@example.com",
    "spaces in@example.com",
    "@example.com",
    "ada@",
    "ada@exa\u202emple.com",
    "ada\u0000@example.com",
    `a@${`${"b".repeat(60)}.`.repeat(6)}com`,
  ),
);
const badSlack = fc.oneof(
  notAStringNorNull,
  fc.constantFrom("", "general", "#General", "#gen eral", "#", `#${"c".repeat(81)}`, "C1", "X0123ABC", `C${"A".repeat(21)}`, "#gen\u200beral", "u0ada0001"),
);

interface FieldSpec {
  /** Where the field is, e.g. ["preferences", "channels"]. */
  path: string[];
  required: boolean;
  /** Values the field never accepts. */
  wrong: fc.Arbitrary<Json>;
  /** A value just over the field's limit. */
  oversize?: Json;
  /** Free text that may hold any character: NUL and lone surrogates must be refused all the same. */
  freeText?: boolean;
}

const NOTIFICATION_FIELDS: FieldSpec[] = [
  { path: ["entityId"], required: true, wrong: badEntityId, oversize: "e".repeat(201) },
  { path: ["subject"], required: true, wrong: fc.oneof(notAString, fc.constantFrom("", " ", "\t\n  ")), oversize: "s".repeat(999), freeText: true },
  { path: ["text"], required: true, wrong: fc.oneof(notAString, fc.constant("")), oversize: "t".repeat(100_001), freeText: true },
  { path: ["html"], required: false, wrong: notAString, freeText: true },
  { path: ["markdown"], required: false, wrong: notAString, oversize: "m".repeat(100_001), freeText: true },
  { path: ["channels"], required: false, wrong: badChannelList(false), oversize: ["email", "slack", "email"] },
  { path: ["tags"], required: false, wrong: badTags, oversize: Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`t${i}`, "v"])) },
];

const ENTITY_FIELDS: FieldSpec[] = [
  { path: ["kind"], required: true, wrong: badKind },
  { path: ["name"], required: true, wrong: fc.oneof(notAString, fc.constant("")), oversize: "n".repeat(201), freeText: true },
  { path: ["email"], required: false, wrong: badEmail, oversize: `${"a".repeat(64)}@${`${"b".repeat(60)}.`.repeat(5)}com` },
  { path: ["slack"], required: false, wrong: badSlack, oversize: `#${"c".repeat(81)}` },
  { path: ["preferences"], required: true, wrong: notAnObject },
  { path: ["preferences", "channels"], required: true, wrong: badChannelList(true), oversize: ["email", "slack", "email"] },
  { path: ["preferences", "optedOut"], required: false, wrong: badChannelList(true) },
  { path: ["preferences", "delivery"], required: false, wrong: badDelivery },
];

const KNOWN_KEYS: Record<BodyTarget, Record<string, string[]>> = {
  notification: { "": ["entityId", "subject", "text", "html", "markdown", "channels", "tags"] },
  entity: { "": ["kind", "name", "email", "slack", "preferences"], preferences: ["channels", "optedOut", "delivery"] },
};

/** Names a client might send by mistake, and names that are dangerous as JavaScript keys. */
const unknownKey = fc.oneof(
  fc.constantFrom(
    "__proto__",
    "constructor",
    "prototype",
    "toString",
    "valueOf",
    "hasOwnProperty",
    "__defineGetter__",
    "idempotencyKey",
    "Subject",
    "entity_id",
    "entityID",
    " text",
    "text ",
    "tags.x",
    "0",
    "-1",
    "colour",
    "a\u0000b",
    "\ud800",
  ),
  nastyString({ minLength: 1, maxLength: 10 }),
);

/** Set a key as an own property, "__proto__" included (plain assignment would set the prototype). */
function setKey(obj: Record<string, Json>, key: string, value: Json): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

function parentOf(body: Record<string, Json>, path: string[]): Record<string, Json> | null {
  let node: Json = body;
  for (const key of path.slice(0, -1)) {
    if (node === null || typeof node !== "object" || Array.isArray(node)) return null;
    node = (node as Record<string, Json>)[key] ?? null;
  }
  return node !== null && typeof node === "object" && !Array.isArray(node) ? (node as Record<string, Json>) : null;
}

type Mutation =
  | { kind: "remove"; field: FieldSpec }
  | { kind: "retype"; field: FieldSpec; value: Json }
  | { kind: "oversize"; field: FieldSpec }
  | { kind: "rename"; field: FieldSpec; to: string }
  | { kind: "unstorable"; field: FieldSpec; char: string; at: number };

function mutationArb(field: FieldSpec): fc.Arbitrary<Mutation> {
  const options: fc.Arbitrary<Mutation>[] = [
    field.wrong.map((value) => ({ kind: "retype" as const, field, value })),
    unknownKey.map((to) => ({ kind: "rename" as const, field, to })),
  ];
  if (field.required) options.push(fc.constant({ kind: "remove" as const, field }));
  if (field.oversize !== undefined) options.push(fc.constant({ kind: "oversize" as const, field }));
  if (field.freeText) {
    options.push(fc.record({ char: fc.constantFrom(...UNSTORABLE), at: fc.nat() }).map(({ char, at }) => ({ kind: "unstorable" as const, field, char, at })));
  }
  return fc.oneof(...options);
}

export interface MutatedBody {
  target: BodyTarget;
  /** What was done, for the failure report. */
  mutations: string[];
  bytes: Uint8Array;
  expect: Expect;
}

/**
 * A valid body with one to three of its fields broken (removed, retyped,
 * renamed, oversized, or given a character PostgreSQL cannot store) and up
 * to two unknown fields added, top-level or nested. The refusal must name
 * every field broken; when the body holds text PostgreSQL cannot store,
 * naming any of the problems is enough (a server may check storability
 * first).
 */
export function mutatedBody(target: BodyTarget): fc.Arbitrary<MutatedBody> {
  const fields = target === "notification" ? NOTIFICATION_FIELDS : ENTITY_FIELDS;
  const valid = target === "notification" ? validNotification : validEntity;
  const nestedLevels = Object.keys(KNOWN_KEYS[target]);
  return fc
    .record({
      base: valid,
      chosen: fc.uniqueArray(fc.constantFrom(...fields), { minLength: 1, maxLength: 3, selector: (f) => f.path[0] }).chain((list) => fc.tuple(...list.map(mutationArb))),
      extra: fc.uniqueArray(fc.record({ level: fc.constantFrom(...nestedLevels), key: unknownKey, value: smallJson }), { maxLength: 2, selector: (u) => u.key }),
    })
    .map(({ base, chosen, extra }) => {
      const body = structuredClone(base);
      const described: string[] = [];
      const paths: string[] = [];
      let unstorable = false;
      const renamedTo = new Set<string>();
      for (const m of chosen) {
        const parent = parentOf(body, m.field.path);
        const key = m.field.path.at(-1)!;
        const prefix = m.field.path.slice(0, -1);
        const at = m.field.path.join(".");
        if (!parent) continue;
        switch (m.kind) {
          case "remove":
            delete parent[key];
            described.push(`removed ${at}`);
            paths.push(at);
            break;
          case "retype":
            setKey(parent, key, m.value);
            described.push(`${at} = ${JSON.stringify(m.value)?.slice(0, 80)}`);
            paths.push(at);
            break;
          case "oversize":
            setKey(parent, key, m.field.oversize!);
            described.push(`${at} just over its limit`);
            paths.push(at);
            break;
          case "rename": {
            const known = KNOWN_KEYS[target][prefix.join(".")] ?? [];
            if (known.includes(m.to) || renamedTo.has(m.to)) continue;
            const value = parent[key];
            if (value === undefined) continue;
            delete parent[key];
            setKey(parent, m.to, value);
            renamedTo.add(m.to);
            described.push(`renamed ${at} to ${JSON.stringify(m.to)}`);
            paths.push([...prefix, m.to].join("."));
            if (m.field.required) paths.push(at);
            break;
          }
          case "unstorable": {
            const before = typeof parent[key] === "string" ? parent[key] : "x";
            const i = m.at % (before.length + 1);
            setKey(parent, key, before.slice(0, i) + m.char + before.slice(i));
            described.push(`${JSON.stringify(m.char)} inserted in ${at}`);
            paths.push(at);
            unstorable = true;
            break;
          }
        }
      }
      for (const u of extra) {
        const holder = u.level === "" ? body : parentOf(body, [u.level, "x"]);
        const known = KNOWN_KEYS[target][u.level] ?? [];
        if (!holder || known.includes(u.key) || (u.level === "" && renamedTo.has(u.key)) || Object.hasOwn(holder, u.key)) continue;
        setKey(holder, u.key, u.value);
        const at = u.level === "" ? u.key : `${u.level}.${u.key}`;
        described.push(`unknown field ${JSON.stringify(at)}`);
        paths.push(at);
      }
      const bytes = Buffer.from(JSON.stringify(body), "utf8");
      // Unknown fields may carry unstorable text too (their values are arbitrary).
      const elsewhere = unstorablePaths(body);
      const expect: Expect =
        bytes.length > BODY_LIMIT
          ? { status: [413], problemType: "payload-too-large", mentions: [/limit/] }
          : unstorable || elsewhere.length > 0
            ? { status: [400], anyPath: [...paths, ...elsewhere] }
            : { status: [400], problemType: "validation-failed", paths };
      return { target, mutations: described, bytes, expect };
    })
    .filter((m) => m.mutations.length > 0 && expectedRefusal(m.target, m.bytes) !== null);
}

// --- Malformed JSON text ------------------------------------------------------------

type TextMutator = (s: string, at: number, pick: number) => string;

const JUNK_TOKENS = [
  "NaN",
  "Infinity",
  "-Infinity",
  "undefined",
  "True",
  "nul",
  "01",
  ".5",
  "+1",
  "1.",
  "0x1F",
  "--1",
  "1e",
  "'x'",
  '"\\x41"',
  '"\\u12"',
  '"\\u00zz"',
  '"\\a"',
  '"\\\'"',
];
const INSERTS = [",", ":", "{", "}", "[", "]", '"', "'", "\\", "\u0001", "\u0000", "\u001f", "\n", "\t", "/", "*", "#", "\ufeff", ",,"];

/** Each takes the JSON text of a valid body and breaks its syntax (the oracle decides whether it really did). */
const TEXT_MUTATORS: Record<string, TextMutator> = {
  truncated: (s, at) => s.slice(0, 1 + (at % (s.length - 1))),
  "trailing comma in object": (s) => `${s.slice(0, -1)},}`,
  "trailing comma in array": (s) => (s.includes("]") ? s.replace("]", ",]") : `${s.slice(0, -1)},"x":[1,]}`),
  "single quotes": (s) => s.replace(/"/g, "'"),
  "unquoted keys": (s) => s.replace(/"([A-Za-z]+)":/g, "$1:"),
  "junk value": (s, _at, pick) => s.replace(/:"(?:[^"\\]|\\.)*"/, `:${JUNK_TOKENS[pick % JUNK_TOKENS.length]}`),
  "character inserted": (s, at, pick) => {
    const i = at % (s.length + 1);
    return s.slice(0, i) + INSERTS[pick % INSERTS.length] + s.slice(i);
  },
  "character deleted": (s, at) => {
    const i = at % s.length;
    return s.slice(0, i) + s.slice(i + 1);
  },
  "two documents": (s) => `${s} ${s}`,
  "garbage after": (s, _at, pick) => s + ["x", "}", ",", "]", "\u0000", "//"][pick % 6],
  comment: (s, _at, pick) => (pick % 2 === 0 ? `/* note */${s}` : `// note\n${s}`),
  "BOM twice": (s) => `\ufeff\ufeff${s}`,
  "raw control character in a string": (s, _at, pick) => s.replace(/:"/, `:"${String.fromCharCode(pick % 32)}`),
  "escape broken": (s, _at, pick) => s.replace(/:"/, `:"${["\\x41", "\\u12", "\\u00zz", "\\a", "\\'", "\\"][pick % 6]}`),
};

export interface MalformedText {
  target: BodyTarget;
  mutation: string;
  bytes: Uint8Array;
  expect: Expect;
}

/** The JSON text of a valid body with its syntax broken; judged by `expectedRefusal`, never valid. */
export function malformedText(target: BodyTarget): fc.Arbitrary<MalformedText> {
  const valid = target === "notification" ? validNotification : validEntity;
  return fc
    .record({ base: valid, mutation: fc.constantFrom(...Object.keys(TEXT_MUTATORS)), at: fc.nat(), pick: fc.nat() })
    .map(({ base, mutation, at, pick }): MalformedText | null => {
      const bytes = Buffer.from(TEXT_MUTATORS[mutation]!(JSON.stringify(base), at, pick), "utf8");
      const expect = expectedRefusal(target, bytes);
      return expect ? { target, mutation, bytes, expect } : null;
    })
    .filter((m): m is MalformedText => m !== null);
}

/** Any JSON value, or any text at all, as a body; judged by `expectedRefusal`, never valid. */
export function arbitraryBody(target: BodyTarget): fc.Arbitrary<MalformedText> {
  return fc
    .oneof(
      fc.jsonValue({ maxDepth: 4, stringUnit: nastyUnit }).map((v) => ({ mutation: "arbitrary JSON value", text: JSON.stringify(v) })),
      fc.dictionary(unknownKey, smallJson, { minKeys: 1, maxKeys: 4 }).map((v) => ({ mutation: "object of unknown fields", text: JSON.stringify(v) })),
      nastyString({ maxLength: 40 }).map((text) => ({ mutation: "arbitrary text", text })),
    )
    .map(({ mutation, text }): MalformedText | null => {
      // Lone surrogates have no UTF-8 form: send what UTF-8 makes of them, and judge that.
      const bytes = Buffer.from(text, "utf8");
      const expect = expectedRefusal(target, bytes);
      return expect ? { target, mutation, bytes, expect } : null;
    })
    .filter((m): m is MalformedText => m !== null);
}
