import { gzipSync, deflateSync } from "node:zlib";
import fc from "fast-check";
import { createApiKey, revokeApiKey } from "../../src/auth/apiKeys";
import { EntityInput } from "../../src/entities/entity.schemas";
import { SendNotificationToEntityOp } from "../../src/notification/notification.schemas";
import { apiKey, countEverything, startApi, type TestApi } from "../helpers/api";
import { createTestDatabase, type TestDatabase } from "../helpers/db";
import {
  BODY_LIMIT,
  arbitraryBody,
  failureReport,
  malformedText,
  mutatedBody,
  runProbes,
  type Answer,
  type BodyTarget,
  type Expect,
  type Json,
  type Probe,
  unstorablePaths,
} from "../helpers/fuzz";
import { createEntity } from "../helpers/tidings";

/**
 * Thousands of malformed requests against the real API over HTTP: each must
 * be refused with a 4xx problem document that names what is wrong, and none
 * may store anything. Valid requests are mixed in; they must succeed, and
 * their rows must be the only ones stored, intact. Generated cases use fixed
 * seeds, so every run sends the same requests.
 */

let t: TestDatabase;
let api: TestApi;
const keys = { admin: "", producer: "", reader: "", entities: "", revoked: "" };
let before: Record<string, number>;
let maxBefore: { clientOps: number; entityEvents: number; job: number };
let requests = 0;
const started = Date.now();

/** Every answer with a 2xx that stores something, whatever the probe meant: the storage check compares against these. */
const accepted = { notifications: [] as { id: string; replayed: boolean; idempotencyKey?: string }[], entityWrites: [] as string[] };
/** What a valid request must have stored, checked at the end; and which probes were answered with a 2xx. */
const storedAs = new Map<Probe, { notification?: Json; entity?: Json }>();
const succeeded = new Set<Probe>();

beforeAll(async () => {
  t = await createTestDatabase();
  // Notifications are for entities that exist: enqueue refuses any other.
  await createEntity(t, "ada");
  await createEntity(t, "a");
  await createEntity(t, "bea");
  await createEntity(t, "a".repeat(200));
  api = await startApi(t);
  keys.admin = await apiKey(t, ["admin"]);
  keys.producer = await apiKey(t, ["producer"]);
  keys.reader = await apiKey(t, ["reader"]);
  keys.entities = await apiKey(t, ["entities"]);
  const revoked = await createApiKey(t.db, { name: "fuzz-revoked", scopes: ["admin"], createdBy: "test" });
  await revokeApiKey(t.db, revoked.keyId, "revoked for the fuzz test");
  keys.revoked = revoked.secret;
  before = await countEverything(t);
  const max = async (sql: string) => (await t.query<{ n: string | null }>(sql)).rows[0]!.n ?? "0";
  maxBefore = {
    clientOps: Number(await max("select max(position)::text as n from notification.client_operations")),
    entityEvents: Number(await max("select max(position)::text as n from entity.events")),
    job: Number(await max("select max(id)::text as n from graphile_worker._private_jobs")),
  };
});
afterAll(async () => {
  await api?.close();
  await t?.close();
  console.log(`api.fuzz: ${requests} requests in ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

// --- Building probes -------------------------------------------------------------

const N = "/v1/notifications";
const ENTITY = "/v1/entities/fuzz-entity";
const UUID = "8c1d3a52-7f0e-4b1a-9c3d-2e5f6a7b8c9d";
const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
const jsonType = { "content-type": "application/json" };

const validNotification = { entityId: "ada", subject: "Your report is ready", text: "Hello from tidings." };
const validEntity = { kind: "user", name: "Ada", email: "ada@example.com", slack: "#general", preferences: { channels: ["email", "slack"] } };

function bodyProbe(target: BodyTarget, label: string, body: string | Uint8Array, expect: Expect, headers: Record<string, string> = {}): Probe {
  return {
    label,
    method: target === "notification" ? "POST" : "PUT",
    path: target === "notification" ? N : ENTITY,
    headers: { ...bearer(keys.admin), ...jsonType, ...headers },
    body,
    expect,
  };
}
const both = (label: string, body: string | Uint8Array, expect: Expect, headers?: Record<string, string>) =>
  (["notification", "entity"] as const).map((target) => bodyProbe(target, label, body, expect, headers));

const malformedJson: Expect = { status: [400], problemType: "malformed-json", mentions: [/JSON/] };
const refused = (...paths: string[]): Expect => ({ status: [400], problemType: "validation-failed", paths });
/** A value PostgreSQL cannot store: refused, naming the field; the problem's type is the server's choice. */
const unstorable = (path: string): Expect => ({ status: [400], paths: [path] });
const tooLarge: Expect = { status: [413], problemType: "payload-too-large", mentions: [/limit/] };
const unsupportedType: Expect = { status: [415], problemType: "unsupported-media-type", mentions: [/Content-Type|charset|encoding/i] };

/** `JSON.stringify` writes NUL and lone surrogates as \u escapes: the body is valid JSON holding them. */
const withField = (base: Record<string, Json>, path: string[], value: Json): string => {
  const body = structuredClone(base) as Record<string, any>;
  let node = body;
  for (const key of path.slice(0, -1)) node = node[key];
  Object.defineProperty(node, path.at(-1)!, { value, enumerable: true, writable: true, configurable: true });
  return JSON.stringify(body);
};
const withoutField = (base: Record<string, Json>, path: string[]): string => {
  const body = structuredClone(base) as Record<string, any>;
  let node = body;
  for (const key of path.slice(0, -1)) node = node[key];
  delete node[path.at(-1)!];
  return JSON.stringify(body);
};
const BASES = { notification: validNotification, entity: validEntity } as const;

/** Put the valid probes among the others, evenly, so the server sees them mixed. */
function interleave(refusals: Probe[], valid: Probe[]): Probe[] {
  const out = [...refusals];
  valid.forEach((probe, i) => out.splice(Math.floor(((i + 1) * out.length) / (valid.length + 1)), 0, probe));
  return out;
}

function record(answers: { probe: Probe; answer: Answer }[]): void {
  for (const { probe, answer } of answers) {
    if (answer.status < 200 || answer.status > 299) continue;
    succeeded.add(probe);
    if (probe.method === "POST" && probe.path.split("?")[0] === N) {
      const idempotencyKey = Object.entries(probe.headers ?? {}).find(([h]) => h.toLowerCase() === "idempotency-key")?.[1];
      accepted.notifications.push({ id: answer.json.id, replayed: answer.headers.get("idempotent-replayed") === "true", idempotencyKey });
    }
    if (probe.method === "PUT" && (answer.json?.result === "created" || answer.json?.result === "changed")) {
      accepted.entityWrites.push(answer.json.entity.id);
    }
  }
}

/** Send the probes, record what was accepted, and fail listing every answer that is wrong. */
async function sendAndJudge(probes: Probe[], concurrency = 6): Promise<void> {
  const result = await runProbes(api.url, probes, { concurrency });
  requests += probes.length;
  record(result.answers);
  if (result.failures.length > 0) {
    throw new Error(failureReport(result.failures, probes.length));
  }
}

function validPost(label: string, body: Record<string, Json> | string | Uint8Array, headers: Record<string, string> = {}, stored?: Json): Probe {
  const probe = bodyProbe(
    "notification",
    label,
    typeof body === "object" && !(body instanceof Uint8Array) ? JSON.stringify(body) : body,
    { status: [202] },
    { ...bearer(keys.producer), ...headers },
  );
  const op = stored ?? (typeof body === "object" && !(body instanceof Uint8Array) ? body : undefined);
  if (op !== undefined)
    storedAs.set(probe, {
      notification: SendNotificationToEntityOp.parse({ ...(op as object), ...(headers["idempotency-key"] ? { idempotencyKey: headers["idempotency-key"] } : {}) }),
    });
  return probe;
}

function validPut(label: string, id: string, body: Record<string, Json>, status: number[] = [201]): Probe {
  const probe: Probe = {
    label,
    method: "PUT",
    path: `/v1/entities/${encodeURIComponent(id)}`,
    headers: { ...bearer(keys.entities), ...jsonType },
    body: JSON.stringify(body),
    expect: { status },
  };
  storedAs.set(probe, { entity: { id, ...(EntityInput.parse(body) as object) } });
  return probe;
}

const deepArray = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
const deepObject = (depth: number, leaf = "1") => '{"a":'.repeat(depth) + leaf + "}".repeat(depth);
const invalidUtf8 = (before: string, bytes: number[], after: string) => Buffer.concat([Buffer.from(before, "utf8"), Buffer.from(bytes), Buffer.from(after, "utf8")]);

// --- The cases ---------------------------------------------------------------------

describe("malformed requests are refused with a problem naming the problem, and store nothing", () => {
  jest.setTimeout(120_000);

  it("bodies that are not JSON: 400 malformed-json", async () => {
    const v = JSON.stringify(validNotification);
    const texts = [
      '{"entityId": "ada", "subject": ',
      '{"entityId":"ada","subject":"a","text":"x",}',
      '{"entityId":"ada","subject":"a","text":"x","channels":["email",]}',
      "NaN",
      '{"entityId":"ada","subject":"a","text":NaN}',
      '{"entityId":"ada","subject":"a","text":Infinity}',
      '{"entityId":"ada","subject":"a","text":-Infinity}',
      "{'entityId':'ada','subject':'a','text':'x'}",
      '{entityId:"ada",subject:"a",text:"x"}',
      `// a comment\n${v}`,
      `{/* a comment */${v.slice(1)}`,
      `\ufeff\ufeff${v}`,
      `{\ufeff${v.slice(1)}`,
      '{"entityId":"ada","subject":"a\u0001b","text":"x"}',
      '{"entityId":"ada","subject":"a\u0000b","text":"x"}',
      '{"entityId":"ada","subject":"a\tb","text":"x"}',
      '{"entityId":"ada","subject":"a\nb","text":"x"}',
      '{"entityId":"ada","subject":"a\u001fb","text":"x"}',
      '{"entityId":"ada","subject":"\\x41","text":"x"}',
      '{"entityId":"ada","subject":"\\u12","text":"x"}',
      '{"entityId":"ada","subject":"\\u00zz","text":"x"}',
      '{"entityId":"ada","subject":"\\a","text":"x"}',
      '{"entityId":"ada","subject":"a\\","text":"x"}',
      ...["01", "+1", ".5", "1.", "0x10", "1e", "--1", "True", "undefined", "nul"].map((n) => `{"entityId":"ada","subject":"a","text":${n}}`),
      '{"entityId" "ada"}',
      '{"entityId":"ada" "subject":"a"}',
      "{}}",
      "{{}}",
      "[",
      "]",
      "{",
      "}",
      "{} {}",
      `${v}x`,
      `${v},`,
      '"just a string"',
      "42",
      "true",
      "null",
      "  ",
      "\n\t\r",
      '{"entityId":"ada',
      "[".repeat(1000),
      '{"a":'.repeat(1000),
      "[".repeat(100_000),
    ];
    const bom = `\ufeff${JSON.stringify({ ...validNotification, subject: "sent with a byte order mark" })}`;
    await sendAndJudge(
      interleave(
        texts.flatMap((text) => both("not JSON", text, malformedJson)),
        // RFC 8259 lets a parser ignore a leading byte order mark: this one is a valid request.
        [validPost("valid, with a leading BOM", bom, {}, { ...validNotification, subject: "sent with a byte order mark" })],
      ),
    );
  });

  it("no body, or an empty one: 400 naming the JSON body", async () => {
    const noBody = (target: BodyTarget): Probe => ({ ...bodyProbe(target, "no body", "", { status: [400], mentions: [/JSON body/] }), body: undefined });
    const noBodyNoType = (target: BodyTarget): Probe => ({ ...noBody(target), headers: bearer(keys.admin) });
    await sendAndJudge([
      ...both("empty body", "", { status: [400], mentions: [/JSON body/] }),
      noBody("notification"),
      noBody("entity"),
      noBodyNoType("notification"),
      noBodyNoType("entity"),
    ]);
  });

  it("wrong types, missing fields and unknown fields in SendNotificationToEntityOp and EntityInput: 400 naming each field", async () => {
    const notString: Json[] = [0, -1, 1.5, 1e308, true, false, null, [], ["x"], {}, { x: "y" }];
    const notNullableString = notString.filter((v) => v !== null);
    const channelLists: Json[] = ["email", 1, true, null, {}, { 0: "email" }, [1], [null], ["fax"], ["EMAIL"], [["email"]], ["email", "email"], ["email", "slack", "email"]];
    const wrong: Record<BodyTarget, [string[], Json[]][]> = {
      notification: [
        [["entityId"], [...notString, "", "-ada", "a b", "ada/1"]],
        [["subject"], [...notString, "", "   "]],
        [["text"], [...notString, ""]],
        [["html"], notString],
        [["markdown"], notString],
        [["channels"], [...channelLists, []]],
        [["tags"], ["k=v", 1, true, null, [], [["k", "v"]], { k: 1 }, { k: null }, { k: {} }, { k: [] }, { k: true }, { "": "v" }, { "a b": "v" }, { "k/v": "v" }]],
      ],
      entity: [
        [["kind"], [...notString, "", "robot", "User", "user "]],
        [["name"], [...notString, ""]],
        [["email"], [...notNullableString, "", "no-at-sign", "two@@example.com", "@example.com", "ada@"]],
        [["slack"], [...notNullableString, "", "general", "#General", "#gen eral", "C1", "X0123ABC"]],
        [["preferences"], ["email", 1, true, null, [], ["email"]]],
        [["preferences", "channels"], channelLists],
        [["preferences", "optedOut"], channelLists],
        [
          ["preferences", "delivery"],
          [...notString, "", "some", "ALL"],
        ],
      ],
    };
    const required: Record<BodyTarget, string[][]> = {
      notification: [["entityId"], ["subject"], ["text"]],
      entity: [["kind"], ["name"], ["preferences"], ["preferences", "channels"]],
    };
    const unknownKeys = [
      "colour",
      "idempotencyKey",
      "Subject",
      "entity_id",
      "__proto__",
      "constructor",
      "prototype",
      "toString",
      "hasOwnProperty",
      "valueOf",
      "",
      " ",
      "a\u0000b",
      "\ud800",
      "tags.x",
    ];
    const probes: Probe[] = [];
    for (const target of ["notification", "entity"] as const) {
      const base = BASES[target] as Record<string, Json>;
      for (const [path, values] of wrong[target]) {
        for (const value of values) probes.push(bodyProbe(target, `wrong type or value for ${path.join(".")}`, withField(base, path, value), refused(path.join("."))));
      }
      for (const path of required[target]) probes.push(bodyProbe(target, `missing ${path.join(".")}`, withoutField(base, path), refused(path.join("."))));
      probes.push(bodyProbe(target, "empty object", "{}", refused(...required[target].filter((p) => p.length === 1).map((p) => p.join(".")))));
      for (const key of unknownKeys) probes.push(bodyProbe(target, "unknown top-level field", withField(base, [key], "x"), refused(key)));
    }
    for (const key of ["colour", "__proto__", "constructor", "toString", "channel", "opted_out", "Delivery"]) {
      probes.push(bodyProbe("entity", "unknown field in preferences", withField(validEntity, ["preferences", key], ["email"]), refused(`preferences.${key}`)));
    }
    probes.push(bodyProbe("entity", "unknown field nested deeper", withField(validEntity, ["preferences", "x"], { y: { z: [1] } }), refused("preferences.x")));
    probes.push(
      bodyProbe("notification", "idempotencyKey in the body", withField(validNotification, ["idempotencyKey"], "k-1"), {
        ...refused("idempotencyKey"),
        mentions: [/Idempotency-Key header/],
      }),
    );
    // The last of duplicated keys wins (JSON.parse): here it is the wrong one.
    probes.push(bodyProbe("notification", "duplicated key, last one wrong", '{"entityId":"ada","subject":"a","text":"x","text":5}', refused("text")));
    probes.push(bodyProbe("notification", "a number too large for a double", '{"entityId":"ada","subject":"a","text":1e400}', refused("text")));

    // zod builds records by assignment, where "__proto__" would set the prototype instead of a tag.
    const protoTag = { ...validNotification, tags: {} as Record<string, Json> };
    Object.defineProperty(protoTag.tags, "__proto__", { value: "x", enumerable: true, writable: true, configurable: true });
    const protoProbe = bodyProbe(
      "notification",
      'a tag named "__proto__": stored as sent, or refused naming it',
      JSON.stringify(protoTag),
      { status: [202, 400], paths: ["tags"] },
      bearer(keys.producer),
    );
    storedAs.set(protoProbe, { notification: protoTag });
    const valid = [
      protoProbe,
      validPost("valid, minimal", validNotification),
      validPost("valid, every field", {
        entityId: "ada",
        subject: "Every field",
        text: "plain",
        html: "<p>html</p>",
        markdown: "**md**",
        channels: ["slack", "email"],
        tags: { order: "1001", "region.eu:west-1": "x" },
      }),
      validPut("valid entity, every field", "valid-1", {
        kind: "team",
        name: "Valid team",
        email: "team@example.com",
        slack: "#valid-team",
        preferences: { channels: ["slack", "email"], optedOut: [], delivery: "first" },
      }),
      validPut("valid entity, nulls and opt-outs", "valid-2", {
        kind: "service",
        name: "svc",
        email: null,
        slack: "U0ADA0001",
        preferences: { channels: [], optedOut: ["email"] },
      }),
    ];
    await sendAndJudge(interleave(probes, valid));
  });

  it("values just over each limit: 400 naming the field; a body over 256 kB: 413", async () => {
    const tags21 = Object.fromEntries(Array.from({ length: 21 }, (_, i) => [`t${i}`, "v"]));
    const over: [BodyTarget, string[], Json][] = [
      ["notification", ["entityId"], "e".repeat(201)],
      ["notification", ["subject"], "s".repeat(999)],
      ["notification", ["subject"], "é".repeat(999)],
      ["notification", ["text"], "t".repeat(100_001)],
      ["notification", ["markdown"], "m".repeat(100_001)],
      ["notification", ["tags"], tags21],
      ["notification", ["tags"], { [`t${"a".repeat(64)}`]: "v" }],
      ["notification", ["tags"], { k: "v".repeat(257) }],
      ["notification", ["channels"], ["email", "slack", "email"]],
      ["entity", ["name"], "n".repeat(201)],
      ["entity", ["email"], `${"a".repeat(64)}@${`${"b".repeat(60)}.`.repeat(5)}com`],
      ["entity", ["slack"], `#${"c".repeat(81)}`],
      ["entity", ["slack"], `C${"A".repeat(21)}`],
      ["entity", ["preferences", "channels"], ["email", "slack", "email"]],
    ];
    const probes = over.map(([target, path, value]) =>
      bodyProbe(target, `${path.join(".")} just over its limit`, withField(BASES[target] as Record<string, Json>, path, value), refused(path.join("."))),
    );

    // A body of exactly `size` bytes; html is the field long enough to fill it.
    const padTo = (size: number) => {
      const shell = JSON.stringify({ ...validNotification, html: "" });
      return JSON.stringify({ ...validNotification, html: "x".repeat(size - shell.length) });
    };
    expect(Buffer.byteLength(padTo(BODY_LIMIT + 1))).toBe(BODY_LIMIT + 1);
    probes.push(
      bodyProbe("notification", "body of limit + 1 bytes", padTo(BODY_LIMIT + 1), tooLarge),
      bodyProbe("notification", "html over its limit (and the body's)", withField(validNotification, ["html"], "h".repeat(500_001)), tooLarge),
      bodyProbe("entity", "1 MB body", withField(validEntity, ["name"], "n".repeat(1_000_000)), tooLarge),
      bodyProbe("notification", "1 MB of whitespace", " ".repeat(1_000_000), tooLarge),
      bodyProbe("notification", "gzip bomb: 2 MB once inflated", gzipSync(Buffer.from(padTo(2_000_000))), tooLarge, { "content-encoding": "gzip" }),
    );
    const valid = [
      validPost("valid, every limit reached", { entityId: "a".repeat(200), subject: "s".repeat(998), text: "t".repeat(100_000), markdown: "m".repeat(100_000) }),
      validPost("valid, 20 tags at their limits", {
        ...validNotification,
        tags: Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`${String(i).padStart(2, "0")}${"k".repeat(62)}`, "v".repeat(256)])),
      }),
      validPost("valid, body exactly at the limit", padTo(BODY_LIMIT), {}, JSON.parse(padTo(BODY_LIMIT))),
      validPut("valid entity, 200-character id and name", "i".repeat(200), { kind: "user", name: "n".repeat(200), preferences: { channels: ["email"] } }),
    ];
    await sendAndJudge(interleave(probes, valid), 3);
  });

  it("deep nesting, thousands of levels: refused naming where, never a crash", async () => {
    const n = JSON.stringify(validNotification).slice(0, -1);
    const e = JSON.stringify(validEntity).slice(0, -1);
    await sendAndJudge(
      [
        bodyProbe("notification", "100,000 nested arrays as the body", deepArray(100_000), refused("(body)")),
        bodyProbe("entity", "100,000 nested arrays as the body", deepArray(100_000), refused("(body)")),
        bodyProbe("notification", "40,000 nested objects as the body", deepObject(40_000), refused("a", "entityId")),
        bodyProbe("entity", "40,000 nested objects as the body", deepObject(40_000), refused("a", "kind")),
        bodyProbe("notification", "deep object in tags", `${n},"tags":{"k":${deepObject(30_000)}}}`, refused("tags")),
        bodyProbe("notification", "deep arrays in channels", `${n},"channels":${deepArray(50_000)}}`, refused("channels")),
        bodyProbe("notification", "deep arrays in text", `${n.replace('"text":"Hello from tidings."', '"text":' + deepArray(50_000))}}`, refused("text")),
        bodyProbe("notification", "deep unknown field", `${n},"x":${deepObject(40_000)}}`, refused("x")),
        bodyProbe(
          "entity",
          "deep arrays in preferences.channels",
          `${e.replace('"preferences":{"channels":["email","slack"]}', `"preferences":{"channels":${deepArray(50_000)}}`)}}`,
          refused("preferences.channels"),
        ),
        bodyProbe(
          "entity",
          "deep unknown field in preferences",
          `${e.replace('"preferences":{"channels":["email","slack"]}', `"preferences":{"channels":[],"x":${deepObject(40_000)}}`)}}`,
          refused("preferences.x"),
        ),
        bodyProbe("notification", "alternating arrays and objects", `${n},"tags":${'[{"a":'.repeat(15_000)}1${"}]".repeat(15_000)}}`, refused("tags")),
        bodyProbe("notification", "1,000 levels in a tag value", `${n},"tags":{"k":${deepArray(1000)}}}`, refused("tags")),
        bodyProbe("notification", "deep and unbalanced", `${n},"x":${"[".repeat(100_000)}}`, malformedJson),
      ],
      2,
    );
  });

  it("odd unicode: NUL and lone surrogates refused (PostgreSQL cannot store them), invisible and bidi marks refused in identifiers, invalid UTF-8 refused", async () => {
    const unstorableValues = ["\u0000", "a\u0000b", "\ud800", "a\udfffb", "\udc00\ud800", "x\ud83d"];
    const freeText: [BodyTarget, string[]][] = [
      ["notification", ["subject"]],
      ["notification", ["text"]],
      ["notification", ["html"]],
      ["notification", ["markdown"]],
      ["notification", ["tags", "k"]],
      ["entity", ["name"]],
    ];
    const probes: Probe[] = [];
    for (const [target, path] of freeText) {
      for (const value of unstorableValues) {
        const base = structuredClone(BASES[target]) as Record<string, Json>;
        if (path[0] === "tags") base.tags = {};
        probes.push(bodyProbe(target, `NUL or lone surrogate in ${path.join(".")}`, withField(base, path, value), unstorable(path.join("."))));
      }
    }
    // Identifiers, enums and addresses: these have a format, and none of these characters fits it.
    const formatted: [BodyTarget, string[], (c: string) => Json][] = [
      ["notification", ["entityId"], (c) => `ada${c}`],
      ["notification", ["tags"], (c) => ({ [`k${c}`]: "v" })],
      ["notification", ["channels"], (c) => [`email${c}`]],
      ["entity", ["kind"], (c) => `user${c}`],
      ["entity", ["email"], (c) => `ada${c}@example.com`],
      ["entity", ["slack"], (c) => `#general${c}`],
      ["entity", ["preferences", "delivery"], (c) => `all${c}`],
    ];
    for (const [target, path, make] of formatted) {
      for (const c of ["\u0000", "\ud800", "\udc00", "\u200b", "\u200f", "\u202e", "\u2066", "\ufeff", "\u00a0", "\u2028"]) {
        const expect = ["\u0000", "\ud800", "\udc00"].includes(c) ? unstorable(path.join(".")) : refused(path.join("."));
        probes.push(bodyProbe(target, `${JSON.stringify(c)} in ${path.join(".")}`, withField(BASES[target], path, make(c)), expect));
      }
    }
    // Bytes that are not UTF-8 (RFC 8259 §8.1 requires UTF-8): decoding them would store U+FFFD instead of what was sent.
    const badUtf8: [string, number[]][] = [
      ["0xFF", [0xff]],
      ["lone continuation byte", [0x80]],
      ["overlong NUL", [0xc0, 0x80]],
      ["UTF-8-encoded surrogate", [0xed, 0xa0, 0x80]],
      ["truncated sequence", [0xe2, 0x82]],
      ["5-byte sequence", [0xf8, 0x88, 0x80, 0x80, 0x80]],
    ];
    for (const [what, bytes] of badUtf8) {
      probes.push(
        bodyProbe("notification", `invalid UTF-8 (${what}) in subject`, invalidUtf8('{"entityId":"ada","subject":"a', bytes, 'b","text":"x"}'), {
          status: [400],
          mentions: [/UTF-8|JSON|encod/i],
        }),
        bodyProbe("entity", `invalid UTF-8 (${what}) in name`, invalidUtf8('{"kind":"user","name":"A', bytes, '","preferences":{"channels":[]}}'), {
          status: [400],
          mentions: [/UTF-8|JSON|encod/i],
        }),
      );
    }
    const valid = [
      validPost("valid, invisible and bidi marks, emoji and combining marks in free text", {
        entityId: "ada",
        subject: "Zero\u200bwidth \u200fRTL \u202eoverride\u202c \u2066isolate\u2069 😀 e\u0301 中文",
        text: "line\u2028separator\u2029 nbsp\u00a0 \ufeffbom-inside \ud83d\ude00 (escaped pair)",
        tags: { lang: "עברית\u200f" },
      }),
      validPut("valid entity, bidi and invisible marks in the name", "valid-unicode", {
        kind: "user",
        name: "\u202eAda\u202c \u200b \u05e2\u05d1 😀",
        preferences: { channels: ["email"] },
      }),
    ];
    await sendAndJudge(interleave(probes, valid));
  });

  it("content types and encodings: 415 for a body that is not JSON, 4xx naming the encoding", async () => {
    const n = JSON.stringify(validNotification);
    const types = [
      "text/plain",
      "text/plain;charset=UTF-8",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "application/json; charset=latin1",
      "application/json; charset=iso-8859-1",
      "application/json; charset=us-ascii",
      "application/xml",
      "text/json",
      "application/json-seq",
      "application/javascript",
      "application/octet-stream",
      "image/png",
      "*/*",
      "",
      "json",
      "application",
    ];
    const probes: Probe[] = types.flatMap((type) => both(`Content-Type ${JSON.stringify(type)}`, n, unsupportedType, { "content-type": type }));
    probes.push(
      ...both("form-encoded body", "entityId=ada&subject=a&text=x", unsupportedType, { "content-type": "application/x-www-form-urlencoded" }),
      ...both("multipart body", '--x\r\nContent-Disposition: form-data; name="entityId"\r\n\r\nada\r\n--x--\r\n', unsupportedType, {
        "content-type": "multipart/form-data; boundary=x",
      }),
      // No Content-Type at all: bytes make fetch send none.
      ...(["notification", "entity"] as const).map((target): Probe => ({ ...bodyProbe(target, "no Content-Type", Buffer.from(n), unsupportedType), headers: bearer(keys.admin) })),
      // Other Unicode encodings: refused, or at least not read as something else than what was sent.
      ...(["utf-16", "utf-16le", "utf-16be", "utf-32"] as const).flatMap((cs) =>
        both(`charset=${cs}`, n, { status: [400, 415], mentions: [/JSON|charset/i] }, { "content-type": `application/json; charset=${cs}` }),
      ),
      // UTF-7 reads "+AEA-" as "@": the body would mean something else than its bytes say.
      bodyProbe("notification", "charset=utf-7", JSON.stringify({ ...validNotification, subject: "price +AEA- 5" }), unsupportedType, {
        "content-type": "application/json; charset=utf-7",
      }),
      ...(["gzip", "deflate", "br"] as const).flatMap((enc) =>
        both(`Content-Encoding ${enc} on a body that is not`, n, { status: [400, 415], mentions: [/gzip|deflate|br\b|encod|compress/i] }, { "content-encoding": enc }),
      ),
      ...both("truncated gzip", gzipSync(Buffer.from(n)).subarray(0, 20), { status: [400], mentions: [/gzip|encod|compress/i] }, { "content-encoding": "gzip" }),
      ...both("gzip of text that is not JSON", gzipSync(Buffer.from("not json")), malformedJson, { "content-encoding": "gzip" }),
      ...both("unknown Content-Encoding", n, unsupportedType, { "content-encoding": "compress" }),
      ...both("Content-Encoding applied twice, sent once", gzipSync(Buffer.from(n)), unsupportedType, { "content-encoding": "gzip, gzip" }),
    );
    const valid = [
      validPost("valid, charset=utf-8", validNotification, { "content-type": "application/json; charset=utf-8" }),
      validPost('valid, charset="UTF-8"', validNotification, { "content-type": 'application/json; charset="UTF-8"' }),
      validPost("valid, application/JSON", validNotification, { "content-type": "application/JSON" }),
      validPost("valid, a +json type", validNotification, { "content-type": "application/vnd.tidings+json" }),
      validPost(
        "valid, gzip-encoded",
        gzipSync(Buffer.from(JSON.stringify({ ...validNotification, subject: "gzipped" }))),
        { "content-encoding": "gzip" },
        { ...validNotification, subject: "gzipped" },
      ),
      validPost(
        "valid, deflate-encoded",
        deflateSync(Buffer.from(JSON.stringify({ ...validNotification, subject: "deflated" }))),
        { "content-encoding": "deflate" },
        { ...validNotification, subject: "deflated" },
      ),
    ];
    await sendAndJudge(interleave(probes, valid));
  });

  it("bad ids in paths: 400 naming the id; undecodable paths: 400 naming the encoding", async () => {
    const idProblem: Expect = { status: [400], problemType: "validation-failed", paths: ["id"] };
    const undecodable: Expect = { status: [400], mentions: [/percent|decod|encod|UTF-8/i] };
    const notificationIds: [string, Expect][] = [
      ["not-a-uuid", idProblem],
      [`${UUID}0`, idProblem],
      [UUID.replace(/-/g, ""), idProblem],
      [`%7B${UUID}%7D`, idProblem],
      [UUID.replace("8c1d", "8c1g"), idProblem],
      [`%20${UUID}`, idProblem],
      [`%E2%80%8B${UUID}`, idProblem],
      [`${UUID}%E2%80%8F`, idProblem],
      [UUID.repeat(100), idProblem],
      ["0", idProblem],
      ["-1", idProblem],
      ["null", idProblem],
      ["%00", idProblem],
      [`${UUID}%00`, idProblem],
      ["%F0%9F%98%80", idProblem],
      ["%ZZ", undecodable],
      ["%", undecodable],
      ["%C0%80", undecodable],
      ["%ED%A0%80", undecodable],
      ["%FF", undecodable],
    ];
    const entityIds: [string, Expect][] = [
      ["-bad", idProblem],
      ["_bad", idProblem],
      ["a%20b", idProblem],
      ["a%2Fb", idProblem],
      ["a%23b", idProblem],
      ["a%3Fb", idProblem],
      ["a%5Cb", idProblem],
      ["%00", idProblem],
      ["a%00b", idProblem],
      ["%E2%80%8Bada", idProblem],
      ["ada%E2%80%8F", idProblem],
      ["%E2%80%AEada", idProblem],
      ["%EF%BB%BFada", idProblem],
      ["ad%C3%A9", idProblem],
      ["%F0%9F%98%80", idProblem],
      ["a".repeat(201), idProblem],
      ["a".repeat(5000), idProblem],
      ["%ZZ", undecodable],
      ["%", undecodable],
      ["a%2", undecodable],
      ["%C0%80", undecodable],
      ["%ED%A0%80", undecodable],
      ["%FF", undecodable],
    ];
    const probes: Probe[] = [];
    for (const [id, expect] of notificationIds) {
      probes.push(
        { label: "bad notification id", method: "GET", path: `${N}/${id}`, headers: bearer(keys.admin), expect },
        { label: "bad notification id (events)", method: "GET", path: `${N}/${id}/events`, headers: bearer(keys.admin), expect },
      );
    }
    for (const [id, expect] of entityIds) {
      probes.push(
        { label: "bad entity id", method: "GET", path: `/v1/entities/${id}`, headers: bearer(keys.admin), expect },
        { label: "bad entity id (history)", method: "GET", path: `/v1/entities/${id}/history`, headers: bearer(keys.admin), expect },
        { label: "bad entity id (PUT)", method: "PUT", path: `/v1/entities/${id}`, headers: { ...bearer(keys.admin), ...jsonType }, body: JSON.stringify(validEntity), expect },
      );
    }
    const notFound: Expect = { status: [404], problemType: "not-found", mentions: [/no such endpoint|no notification|no entity/] };
    const notAllowed = (allow: RegExp): Expect => ({ status: [405], problemType: "method-not-allowed", mentions: [/not allowed/], headers: { allow } });
    probes.push(
      // The entity list (GET /v1/entities) answers there: a PUT without an id is a method it does not allow.
      {
        label: "no entity id",
        method: "PUT",
        path: "/v1/entities/",
        headers: { ...bearer(keys.admin), ...jsonType },
        body: JSON.stringify(validEntity),
        expect: notAllowed(/GET/),
      },
      { label: "unknown notification", method: "GET", path: `${N}/${UUID}`, headers: bearer(keys.admin), expect: notFound },
      {
        label: "unknown route",
        method: "POST",
        path: "/v1/notification",
        headers: { ...bearer(keys.admin), ...jsonType },
        body: JSON.stringify(validNotification),
        expect: notFound,
      },
      { label: "wrong method", method: "DELETE", path: N, headers: bearer(keys.admin), expect: notAllowed(/POST/) },
      {
        label: "wrong method",
        method: "POST",
        path: "/v1/entities/ada",
        headers: { ...bearer(keys.admin), ...jsonType },
        body: JSON.stringify(validEntity),
        expect: notAllowed(/PUT, PATCH/),
      },
      { label: "wrong method", method: "PUT", path: N, headers: { ...bearer(keys.admin), ...jsonType }, body: JSON.stringify(validNotification), expect: notAllowed(/POST/) },
      { label: "wrong method", method: "POST", path: "/v1/events", headers: { ...bearer(keys.admin), ...jsonType }, body: "{}", expect: notAllowed(/GET/) },
      {
        label: "wrong method",
        method: "POST",
        path: `${N}/${UUID}`,
        headers: { ...bearer(keys.admin), ...jsonType },
        body: JSON.stringify(validNotification),
        expect: notAllowed(/GET/),
      },
    );
    await sendAndJudge(probes);
  });

  it("bad query parameters: 400 naming the parameter", async () => {
    const q = (path: string, query: string, param: string, key = keys.admin): Probe => ({
      label: `bad query parameter ${param}`,
      method: "GET",
      path: `${path}?${query}`,
      headers: bearer(key),
      expect: { status: [400], problemType: "validation-failed", paths: [param] },
    });
    const cursor = (text: string) => encodeURIComponent(Buffer.from(text, "utf8").toString("base64url"));
    const probes: Probe[] = [];
    for (const v of ["0", "101", "-1", "1.5", "1e2", "abc", "", "%201", "0x10", "9999999999", "%EF%BC%91", "1%00", "20&limit=30"]) probes.push(q(N, `limit=${v}`, "limit"));
    for (const v of ["0", "1001", "-5", "abc", "", "1,000"]) probes.push(q("/v1/events", `limit=${v}`, "limit"));
    for (const v of ["31", "-1", "1.5", "abc", "", "9999999999", "30s", "1&wait=2"]) probes.push(q("/v1/events", `wait=${v}`, "wait"));
    for (const v of [
      "yesterday",
      "1-",
      "-1",
      "1-2-3",
      "a-1",
      "1--1",
      "%00",
      "1-1%00",
      "",
      "0x1-1",
      "1-1.5",
      `${"9".repeat(21)}-1`,
      `1-${"9".repeat(17)}`,
      "99999999999999999999-1",
      "18446744073709551616-0",
      "1-1&after=2-2",
    ])
      probes.push(q("/v1/events", `after=${v}`, "after"));
    for (const v of [
      "abc",
      "",
      "%00",
      "x".repeat(101),
      cursor("n2:1:1"),
      cursor("n1:1"),
      cursor("n1:a:1"),
      cursor("n1:1:-1"),
      cursor("n1:1:1:1"),
      cursor(`n1:${"9".repeat(21)}:1`),
      cursor("n1:99999999999999999999:1"),
      cursor("n1:-99999999999999999999:1"),
      cursor("n1:1:99999999999999999"),
    ]) {
      probes.push(q(N, `cursor=${v}`, "cursor"));
    }
    // Well-formed, but beyond what PostgreSQL's timestamps hold: an empty page or a 400 naming the parameter are both right.
    for (const [param, v] of [
      ["cursor", cursor("n1:9223372036854775807:1")],
      ["cursor", cursor("n1:-9223372036854775808:1")],
      ["cursor", cursor("n1:999999999999999999:1")],
      ["since", "0000-01-01T00:00:00Z"],
      ["since", "%2B002026-05-01T00:00:00Z"],
    ] as const) {
      probes.push({ ...q(N, `${param}=${v}`, param), label: `extreme ${param}`, expect: { status: [200, 400], paths: [param] } });
    }
    for (const v of ["lost", "SENT", "", "sent%00", "accepted&status=sent", "sent,failed"]) probes.push(q(N, `status=${v}`, "status"));
    for (const v of [
      "last-week",
      "2026-05-01",
      "2026-05-01T12:00:00",
      "2026-13-01T00:00:00Z",
      "2026-02-30T00:00:00Z",
      "2026-05-01T24:00:00Z",
      "2026-05-01T12:00:60Z",
      "2026-05-01T12:00:00%2B99:99",
      "1714564800",
      "",
    ]) {
      probes.push(q(N, `since=${v}`, "since"));
    }
    for (const v of ["-ada", "a%20b", "%00", "ada%E2%80%8B", "a".repeat(201), "ada&entityId=bea"]) probes.push(q(N, `entityId=${v}`, "entityId"));
    for (const v of ["soon", "2026-13-01T00:00:00Z", "2026-05-01", "", "%00"]) probes.push(q("/v1/entities/ada/history", `at=${v}`, "at"));
    for (const [path, name] of [
      [N, "colour"],
      [N, "__proto__"],
      [N, "constructor"],
      [N, "toString"],
      ["/v1/events", "cursor"],
      ["/v1/events", "Limit"],
      [`${N}/${UUID}`, "x"],
      [`${N}/${UUID}/events`, "limit"],
      ["/v1/entities/ada", "at"],
      ["/v1/entities/ada/history", "limit"],
      [N, "limit%5B%5D"],
    ] as const) {
      probes.push(q(path, `${name}=1`, decodeURIComponent(name)));
    }
    for (const [method, path, body] of [
      ["POST", `${N}?x=1`, JSON.stringify(validNotification)],
      ["PUT", `/v1/entities/ada?at=2026-05-01T00:00:00Z`, JSON.stringify(validEntity)],
    ] as const) {
      const param = path.split("?")[1]!.split("=")[0]!;
      probes.push({ label: "query parameter on a write", method, path, headers: { ...bearer(keys.admin), ...jsonType }, body, expect: refused(param) });
    }
    const valid: Probe[] = [
      { label: "valid list", method: "GET", path: `${N}?limit=100&since=2020-01-01T00:00:00Z`, headers: bearer(keys.reader), expect: { status: [200] } },
      { label: "valid feed", method: "GET", path: "/v1/events?limit=1000&wait=0", headers: bearer(keys.reader), expect: { status: [200] } },
      { label: "valid feed from the largest txid", method: "GET", path: "/v1/events?after=18446744073709551615-0", headers: bearer(keys.reader), expect: { status: [200] } },
    ];
    await sendAndJudge(interleave(probes, valid));
  });

  it("bad Idempotency-Key headers: 400 naming Idempotency-Key", async () => {
    const body = JSON.stringify(validNotification);
    const named: Expect = { status: [400], mentions: [/Idempotency-Key/i] };
    // fetch refuses NUL, CR, LF and most other controls in a header value, and trims leading and trailing spaces.
    const values = ["", " ", "x".repeat(256), "x".repeat(4000), "a\tb", "é", "key-é", "\u00e2\u0080\u008b", "\u00ff", "a\u0080b"];
    const probes = values.map((value) => bodyProbe("notification", "bad Idempotency-Key", body, named, { "idempotency-key": value }));
    // Reading endpoints do not take the header: nothing to check there. A valid key on a bad body: the body is what is named.
    probes.push(
      bodyProbe("notification", "valid Idempotency-Key, bad body", withField(validNotification, ["subject"], 1), refused("subject"), {
        "idempotency-key": "fuzz-valid-key-bad-body",
      }),
    );
    await sendAndJudge(probes);
  });

  it("Idempotency-Key reuse and replay; entity writes that change nothing", async () => {
    const idempotencyKey = `fuzz ${"k".repeat(240)} end`.slice(0, 255);
    const body = { ...validNotification, subject: "idempotent" };
    const first = validPost("valid, Idempotency-Key of 255 characters", body, { "idempotency-key": idempotencyKey });
    await sendAndJudge([first], 1);
    await sendAndJudge([{ ...first, label: "replay", expect: { status: [202], headers: { "idempotent-replayed": /^true$/ } } }], 1);
    await sendAndJudge(
      [
        bodyProbe(
          "notification",
          "Idempotency-Key reused with another request",
          JSON.stringify({ ...body, text: "different" }),
          { status: [422], problemType: "idempotency-key-reused", mentions: [/Idempotency-Key/] },
          { ...bearer(keys.producer), "idempotency-key": idempotencyKey },
        ),
        bodyProbe("notification", "Idempotency-Key reused with an invalid request", JSON.stringify({ ...body, text: 5 }), refused("text"), {
          ...bearer(keys.producer),
          "idempotency-key": idempotencyKey,
        }),
      ],
      1,
    );
    const entity = { kind: "user", name: "Seq", preferences: { channels: ["email"] } };
    await sendAndJudge([validPut("valid entity, created", "valid-seq", entity)], 1);
    await sendAndJudge([validPut("valid entity, unchanged", "valid-seq", entity, [200])], 1);
    await sendAndJudge([validPut("valid entity, changed", "valid-seq", { ...entity, name: "Seq 2" }, [200])], 1);
  });

  it("bad Authorization headers: 401, or 403 naming the scope, as problem documents", async () => {
    const unauthorized: Expect = {
      status: [401],
      problemType: "unauthorized",
      mentions: [/API key|Authorization|Bearer/],
      headers: { "www-authenticate": /^Bearer realm="tidings"/ },
    };
    const authHeaders: [string, Record<string, string>, Expect][] = [
      ["no Authorization", {}, unauthorized],
      ["Basic", { authorization: "Basic dXNlcjpwYXNz" }, unauthorized],
      ["Bearer without a token", { authorization: "Bearer" }, unauthorized],
      ["Bearer and spaces", { authorization: "Bearer    " }, unauthorized],
      ["a malformed token", { authorization: "Bearer tdk_short" }, unauthorized],
      ["a well-formed unknown token", { authorization: `Bearer tdk_${"A".repeat(43)}` }, unauthorized],
      ["a key with a character more", { authorization: `Bearer ${keys.admin}x` }, unauthorized],
      ["a key with its last character changed", { authorization: `Bearer ${keys.admin.slice(0, -1)}${keys.admin.endsWith("A") ? "B" : "A"}` }, unauthorized],
      ["a key and more words", { authorization: `Bearer ${keys.admin} extra` }, unauthorized],
      ["two keys", { authorization: `Bearer ${keys.admin},${keys.admin}` }, unauthorized],
      ["another scheme", { authorization: `Token ${keys.admin}` }, unauthorized],
      ["the key alone", { authorization: keys.admin }, unauthorized],
      ["Bearer and a tab", { authorization: `Bearer\t${keys.admin}` }, unauthorized],
      ["non-ASCII token", { authorization: `Bearer tdk_${"é".repeat(43)}` }, unauthorized],
      ["an 8 kB token", { authorization: `Bearer ${"a".repeat(8000)}` }, unauthorized],
      ["a revoked key", bearer(keys.revoked), { ...unauthorized, mentions: [/revoked/] }],
    ];
    const endpoints: { method: string; path: string; body?: string; scope: string }[] = [
      { method: "POST", path: N, body: JSON.stringify(validNotification), scope: "producer" },
      { method: "PUT", path: "/v1/entities/auth-probe", body: JSON.stringify(validEntity), scope: "entities" },
      { method: "GET", path: N, scope: "reader" },
      { method: "GET", path: "/v1/events", scope: "reader" },
      { method: "GET", path: "/v1/entities/ada", scope: "entities" },
    ];
    const probes: Probe[] = [];
    for (const ep of endpoints) {
      const type = ep.body ? jsonType : {};
      for (const [label, headers, expect] of authHeaders) probes.push({ label, method: ep.method, path: ep.path, headers: { ...headers, ...type }, body: ep.body, expect });
      for (const [scope, key] of Object.entries({ producer: keys.producer, reader: keys.reader, entities: keys.entities })) {
        if (scope === ep.scope) continue;
        probes.push({
          label: `a ${scope} key where ${ep.scope} is needed`,
          method: ep.method,
          path: ep.path,
          headers: { ...bearer(key), ...type },
          body: ep.body,
          expect: { status: [403], problemType: "forbidden", mentions: [new RegExp(`"${ep.scope}"`)], members: { requiredScope: ep.scope } },
        });
      }
    }
    // Authentication comes first: a bad body with a bad key is a 401.
    probes.push({ label: "no key and a malformed body", method: "POST", path: N, headers: jsonType, body: "{", expect: unauthorized });
    const valid: Probe[] = [
      { label: "valid, lower-case scheme", method: "GET", path: N, headers: { authorization: `bearer ${keys.reader}` }, expect: { status: [200] } },
      { label: "valid, spaces after the scheme", method: "GET", path: "/v1/events", headers: { authorization: `Bearer   ${keys.reader}` }, expect: { status: [200] } },
    ];
    await sendAndJudge(interleave(probes, valid));
  });

  // --- Generated ---------------------------------------------------------------------

  const sample = <T>(arb: fc.Arbitrary<T>, seed: number, numRuns: number): T[] => fc.sample(arb, { seed, numRuns });

  it("property: SendNotificationToEntityOp with fields removed, retyped, renamed, oversized or holding NUL is refused naming each field", async () => {
    const probes = sample(mutatedBody("notification"), 20260501, 350).map((m) => bodyProbe("notification", `fuzz: ${m.mutations.join("; ")}`, m.bytes, m.expect));
    const valid = sample(
      fc
        .record({
          entityId: fc.constantFrom("ada", "bea"),
          subject: fc.string({ unit: "grapheme", minLength: 1, maxLength: 30 }).filter((s) => s.trim() !== ""),
          text: fc.string({ unit: "grapheme", minLength: 1, maxLength: 30 }),
        })
        .filter((b) => unstorablePaths(b).length === 0),
      7,
      4,
    ).map((body) => validPost("valid, generated", body));
    await sendAndJudge(interleave(probes, valid));
  });

  it("property: EntityInput with fields removed, retyped, renamed, oversized, holding NUL, or unknown fields nested: refused naming each field", async () => {
    const probes = sample(mutatedBody("entity"), 20260502, 250).map((m) => bodyProbe("entity", `fuzz: ${m.mutations.join("; ")}`, m.bytes, m.expect));
    await sendAndJudge(probes);
  });

  it("property: JSON text with its syntax broken, arbitrary JSON values and arbitrary text are refused", async () => {
    const probes = [
      ...sample(malformedText("notification"), 20260503, 110).map((m) => bodyProbe("notification", `fuzz text: ${m.mutation}`, m.bytes, m.expect)),
      ...sample(malformedText("entity"), 20260504, 90).map((m) => bodyProbe("entity", `fuzz text: ${m.mutation}`, m.bytes, m.expect)),
      ...sample(arbitraryBody("notification"), 20260505, 60).map((m) => bodyProbe("notification", `fuzz body: ${m.mutation}`, m.bytes, m.expect)),
      ...sample(arbitraryBody("entity"), 20260506, 40).map((m) => bodyProbe("entity", `fuzz body: ${m.mutation}`, m.bytes, m.expect)),
    ];
    await sendAndJudge(probes);
  });

  // --- What is stored ------------------------------------------------------------------

  it("stores exactly what the accepted requests asked for: refused requests appended nothing, queued no job, kept no idempotency key", async () => {
    const after = await countEverything(t);
    const created = accepted.notifications.filter((n) => !n.replayed);
    const changedStreams = new Set(["notification.client_operations", "entity.events", "api.idempotency_keys", "graphile_worker jobs"]);
    const unchanged = Object.fromEntries(
      Object.keys(after)
        .filter((k) => !changedStreams.has(k))
        .map((k) => [k, after[k]]),
    );
    expect(unchanged).toEqual(Object.fromEntries(Object.keys(unchanged).map((k) => [k, before[k]])));

    const ops = await t.query<{ id: string; payload: Json }>("select id, payload from notification.client_operations where position > $1 order by position", [maxBefore.clientOps]);
    expect(ops.rows.map((r) => r.id).sort()).toEqual(created.map((n) => n.id).sort());

    const entityRows = await t.query<{ id: string; payload: { entity: Json } }>("select id, payload from entity.events where position > $1 order by position", [
      maxBefore.entityEvents,
    ]);
    expect(entityRows.rows.map((r) => r.id).sort()).toEqual([...accepted.entityWrites].sort());

    const idempotency = await t.query<{ key: string; tracking_id: string }>("select key, tracking_id from api.idempotency_keys order by key");
    expect(idempotency.rows.map((r) => r.key).sort()).toEqual(
      created
        .filter((n) => n.idempotencyKey !== undefined)
        .map((n) => n.idempotencyKey!)
        .sort(),
    );
    expect(after["api.idempotency_keys"]! - before["api.idempotency_keys"]!).toBe(idempotency.rows.length);

    // Each job points at a record of an accepted request; each accepted notification got its job (the outbox works).
    const jobs = await t.query<{ id: string }>("select payload->>'id' as id from graphile_worker._private_jobs where id > $1", [maxBefore.job]);
    const acceptedIds = new Set([...created.map((n) => n.id), ...accepted.entityWrites]);
    expect(jobs.rows.filter((j) => !acceptedIds.has(j.id))).toEqual([]);
    const jobIds = new Set(jobs.rows.map((j) => j.id));
    expect(created.filter((n) => !jobIds.has(n.id))).toEqual([]);

    // Valid requests: the stored payload is what was sent, every character intact.
    const payloadById = new Map(ops.rows.map((r) => [r.id, r.payload]));
    const entityPayloads = entityRows.rows.map((r) => r.payload.entity);
    let checked = 0;
    for (const [probe, want] of storedAs) {
      // A valid request refused is reported by its own test above.
      if (!succeeded.has(probe)) continue;
      if (want.notification !== undefined) {
        const answered = accepted.notifications.find((n) => n.idempotencyKey === probe.headers?.["idempotency-key"] && n.idempotencyKey !== undefined);
        const candidates = answered ? [payloadById.get(answered.id)] : [...payloadById.values()];
        expect({ probe: probe.label, stored: candidates.some((p) => JSON.stringify(sortKeys(p)) === JSON.stringify(sortKeys(want.notification))) }).toEqual({
          probe: probe.label,
          stored: true,
        });
      }
      if (want.entity !== undefined) {
        expect({ probe: probe.label, stored: entityPayloads.some((p) => JSON.stringify(sortKeys(p)) === JSON.stringify(sortKeys(want.entity))) }).toEqual({
          probe: probe.label,
          stored: true,
        });
      }
      checked++;
    }
    expect(checked).toBeGreaterThanOrEqual(20);
    expect(requests).toBeGreaterThanOrEqual(1000);
  });
});

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const k of Object.keys(value).sort()) Object.defineProperty(out, k, { value: sortKeys((value as Record<string, unknown>)[k]), enumerable: true });
    return out;
  }
  return value;
}
