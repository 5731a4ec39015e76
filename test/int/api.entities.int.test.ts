import { removeEntity } from "../../src/entities/entity.repository";
import { apiKey, countEverything, startApi, type TestApi } from "../helpers/api";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

/**
 * Entities as an API people expect: a list that filters and pages like every
 * list, PATCH of some fields, an ETag (the version) on every entity answer,
 * and If-Match making a write conditional, so two editors cannot overwrite
 * each other unseen.
 */

let t: TestDatabase;
let api: TestApi;
let key: string;

beforeAll(async () => {
  t = await createTestDatabase(5);
  api = await startApi(t);
  key = await apiKey(t, ["entities"]);
  await put("ada", person("Ada", { slack: "#eng" }));
  await put("bob", person("Bob", { email: "Bob.Builder@Example.com" }));
  await put("ops-team", { kind: "team", name: "Operations", email: "ops@example.com", slack: "#ops", preferences: { channels: ["slack"] } });
  await put("billing-svc", { kind: "service", name: "Billing", email: null, slack: "#billing", preferences: { channels: ["slack"] } });
  await put("gone", person("Gone"));
  await removeEntity(t.db, "gone", "test");
});
afterAll(async () => {
  await api.close();
  await t.close();
});

function person(name: string, extra: Record<string, unknown> = {}) {
  return { kind: "user", name, email: `${name.toLowerCase()}@example.com`, preferences: { channels: ["email"] }, ...extra };
}
function put(id: string, body: unknown, headers: Record<string, string> = {}) {
  return api.call("PUT", `/v1/entities/${id}`, { key, body, headers });
}
function patch(id: string, body: unknown, headers: Record<string, string> = {}) {
  return api.call("PATCH", `/v1/entities/${id}`, { key, body, headers });
}
async function ids(query: string): Promise<string[]> {
  const res = await api.call("GET", `/v1/entities${query}`, { key });
  expect(res.status).toBe(200);
  return res.json.items.map((i: { entity: { id: string } }) => i.entity.id);
}

describe("GET /v1/entities", () => {
  it("lists current entities by id, removed ones left out, each with its version", async () => {
    const res = await api.call("GET", "/v1/entities", { key });
    expect(res.json.items.map((i: { entity: { id: string } }) => i.entity.id)).toEqual(["ada", "billing-svc", "bob", "ops-team"]);
    expect(res.json.items[0]).toMatchObject({ entity: { id: "ada", name: "Ada" }, version: 1 });
    expect(res.json.next).toBeNull();
  });

  it("filters by kind, by address (email in any case, or Slack destination) and by text", async () => {
    expect(await ids("?kind=team")).toEqual(["ops-team"]);
    expect(await ids("?kind=service")).toEqual(["billing-svc"]);
    expect(await ids("?address=bob.builder%40example.com")).toEqual(["bob"]);
    expect(await ids(`?address=${encodeURIComponent("#eng")}`)).toEqual(["ada"]);
    expect(await ids("?q=OPERA")).toEqual(["ops-team"]);
    expect(await ids("?q=BUILDER")).toEqual(["bob"]);
    expect(await ids("?q=example.com&kind=user")).toEqual(["ada", "bob"]);
    expect(await ids("?q=gone")).toEqual([]);
  });

  it("pages with after/next, every entity once", async () => {
    const seen: string[] = [];
    let after: string | null = null;
    let pages = 0;
    do {
      const res: { status: number; json: { items: Array<{ entity: { id: string } }>; next: string | null } } = await api.call(
        "GET",
        `/v1/entities?limit=1${after ? `&after=${after}` : ""}`,
        { key },
      );
      expect(res.status).toBe(200);
      seen.push(...res.json.items.map((i) => i.entity.id));
      after = res.json.next;
      pages++;
    } while (after);
    expect(seen).toEqual(["ada", "billing-svc", "bob", "ops-team"]);
    expect(pages).toBe(4);
  });

  it("refuses a cursor it did not give, an unknown filter and a kind that does not exist, naming them", async () => {
    for (const [query, path] of [
      ["?after=nope", "after"],
      ["?colour=red", "colour"],
      ["?kind=robot", "kind"],
      ["?limit=0", "limit"],
    ]) {
      const res = await api.call("GET", `/v1/entities${query}`, { key });
      expect({ query, status: res.status, path: res.json.errors?.[0]?.path }).toEqual({ query, status: 400, path: expect.stringContaining(path!) });
    }
  });
});

describe("PATCH /v1/entities/:id", () => {
  it("changes the fields given and keeps the others; preferences merge key by key; null clears an address", async () => {
    await put("cy", person("Cy", { slack: "#cy", preferences: { channels: ["email", "slack"], delivery: "fallback" } }));
    const renamed = await patch("cy", { name: "Cyrus" });
    expect(renamed.status).toBe(200);
    expect(renamed.json).toMatchObject({ version: 2, changed: ["name"], result: "changed", entity: { name: "Cyrus", email: "cy@example.com", slack: "#cy" } });
    expect(renamed.headers.get("etag")).toBe('"2"');

    const prefs = await patch("cy", { preferences: { optedOut: ["slack"] } });
    expect(prefs.json.entity.preferences).toEqual({ channels: ["email", "slack"], optedOut: ["slack"], delivery: "fallback" });
    const cleared = await patch("cy", { slack: null });
    expect(cleared.json).toMatchObject({ version: 4, changed: ["slack"], entity: { slack: null } });
    const same = await patch("cy", { name: "Cyrus" });
    expect(same.json).toMatchObject({ version: 4, changed: [], result: "unchanged" });
  });

  it("refuses a patch that leaves the entity invalid, or names an unknown field, storing nothing", async () => {
    const before = await countEverything(t);
    const bad = await patch("ada", { preferences: { channels: ["fax"] } });
    expect(bad.status).toBe(400);
    expect(bad.json.errors[0].path).toContain("preferences.channels");
    const noPrefs = await patch("ada", { preferences: null });
    expect(noPrefs.status).toBe(400);
    const unknown = await patch("ada", { colour: "red" });
    expect(unknown.status).toBe(400);
    expect(unknown.json.errors[0].path).toContain("colour");
    expect((await patch("nobody", { name: "X" })).status).toBe(404);
    expect(await countEverything(t)).toEqual(before);
  });
});

describe("ETag and If-Match", () => {
  it("every entity answer carries its version as ETag; If-None-Match answers 304", async () => {
    const got = await api.call("GET", "/v1/entities/ada", { key });
    expect(got.headers.get("etag")).toBe(`"${got.json.version}"`);
    const notModified = await api.call("GET", "/v1/entities/ada", { key, headers: { "if-none-match": got.headers.get("etag")! } });
    expect(notModified.status).toBe(304);
    const created = await put("dee", person("Dee"));
    expect(created.status).toBe(201);
    expect(created.headers.get("etag")).toBe('"1"');
    const at = await api.call("GET", `/v1/entities/dee/history?at=${encodeURIComponent(new Date(Date.now() + 60_000).toISOString())}`, { key });
    expect(at.headers.get("etag")).toBe('"1"');
  });

  it("two editors: the second write with the version it read is refused with 412 and the current ETag, nothing stored", async () => {
    await put("eve", person("Eve"));
    const read = await api.call("GET", "/v1/entities/eve", { key });
    const etag = read.headers.get("etag")!;

    const first = await patch("eve", { name: "Eve A" }, { "if-match": etag });
    expect(first.status).toBe(200);
    expect(first.headers.get("etag")).toBe('"2"');

    const before = await countEverything(t);
    const second = await patch("eve", { name: "Eve B" }, { "if-match": etag });
    expect(second.status).toBe(412);
    expect(second.json.type).toBe("urn:tidings:problem:precondition-failed");
    expect(second.json.detail).toContain("version 2");
    expect(second.headers.get("etag")).toBe('"2"');
    const secondPut = await put("eve", person("Eve", { name: "Eve B" }), { "if-match": etag });
    expect(secondPut.status).toBe(412);
    expect(await countEverything(t)).toEqual(before);

    // With the current version (or one of a list, or *), the write goes through.
    expect((await put("eve", person("Eve", { name: "Eve C" }), { "if-match": `"1", "2"` })).status).toBe(200);
    expect((await patch("eve", { name: "Eve D" }, { "if-match": "*" })).json.version).toBe(4);
    // A weak tag never matches (If-Match compares strongly).
    expect((await patch("eve", { name: "Eve E" }, { "if-match": 'W/"4"' })).status).toBe(412);
    expect((await api.call("GET", "/v1/entities/eve", { key })).json.entity.name).toBe("Eve D");
  });

  it("If-Match on an entity that does not exist fails: * included", async () => {
    expect((await put("fay", person("Fay"), { "if-match": "*" })).status).toBe(412);
    expect((await put("fay", person("Fay"), { "if-match": '"1"' })).status).toBe(412);
    expect((await api.call("GET", "/v1/entities/fay", { key })).status).toBe(404);
  });
});
