import { getEntities, removeEntity } from "../../src/entities/entity.repository";
import { createTestDatabase, waitFor, type TestDatabase } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";

/**
 * Entity versions as a client sees them: each entity counts its own versions
 * from 1, whatever else entity.events holds, and `changed` says what a PUT
 * changed. The stream position stays where notifications need it.
 */

let t: TestDatabase;
let api: TestApi;
let key: string;

beforeAll(async () => {
  t = await createTestDatabase(5);
  api = await startApi(t);
  key = await apiKey(t, ["entities"]);
});
afterAll(async () => {
  await api.close();
  await t.close();
});

const ALL_FIELDS = ["kind", "name", "email", "slack", "preferences"];
const person = (name: string, extra: Record<string, unknown> = {}) => ({
  kind: "user",
  name,
  email: `${name.toLowerCase()}@example.com`,
  preferences: { channels: ["email"] },
  ...extra,
});
const put = (id: string, body: unknown) => api.call("PUT", `/v1/entities/${id}`, { key, body });
const get = (path: string) => api.call("GET", path, { key });
const positionsOf = async (id: string) =>
  (await t.query<{ position: number }>("select position from entity.events where id = $1 order by position", [id])).rows.map((r) => Number(r.position));

describe("entity versions", () => {
  it("count per entity from 1; changed lists what changed, nothing when unchanged", async () => {
    // Another entity first, so entity.events positions and ada's versions part ways.
    expect((await put("zed", person("Zed"))).json).toMatchObject({ result: "created", version: 1 });

    const first = await put("ada", person("Ada"));
    expect(first.status).toBe(201);
    expect(first.json).toMatchObject({ result: "created", version: 1, changed: ALL_FIELDS });

    const second = await put("ada", person("Ada", { name: "Ada Lovelace" }));
    expect(second.status).toBe(200);
    expect(second.json).toMatchObject({ result: "changed", version: 2, changed: ["name"], entity: { name: "Ada Lovelace" } });

    const same = await put("ada", person("Ada", { name: "Ada Lovelace" }));
    expect(same.status).toBe(200);
    expect(same.json).toMatchObject({ result: "unchanged", version: 2, changed: [], recordedAt: second.json.recordedAt });
    expect(await positionsOf("ada")).toHaveLength(2);

    // GET answers the current version, with what that version changed.
    expect((await get("/v1/entities/ada")).json).toMatchObject({ version: 2, changed: ["name"], recordedAt: second.json.recordedAt });
  });

  it("two entities written in turns keep their own counts; history and ?at= answer them", async () => {
    const steps: Array<[string, Record<string, unknown>, number]> = [
      ["kim", person("Kim"), 1],
      ["lou", person("Lou"), 1],
      ["kim", person("Kim", { slack: "#kim" }), 2],
      ["lou", person("Lou", { email: "lou@example.org" }), 2],
      ["lou", person("Lou", { email: "lou@example.org", preferences: { channels: ["email"], delivery: "first" } }), 3],
      ["kim", person("Kim", { slack: "#kim", name: "Kimberly" }), 3],
      ["kim", person("Kim", { slack: "#kim", name: "Kimberly", kind: "team" }), 4],
    ];
    const answers = [];
    for (const [id, body, expected] of steps) {
      const answer = await put(id, body);
      expect([id, answer.json.version]).toEqual([id, expected]);
      answers.push({ id, answer: answer.json });
      // The next version must be recorded at a later millisecond, so ?at= can tell them apart.
      const now = Date.now();
      await waitFor(async () => Date.now() > now + 1, { intervalMs: 1, what: "the clock to move" });
    }
    expect(answers.find((a) => a.id === "lou" && a.answer.version === 2)!.answer.changed).toEqual(["email"]);
    expect(answers.find((a) => a.id === "kim" && a.answer.version === 4)!.answer.changed).toEqual(["kind"]);

    for (const [id, count] of [
      ["kim", 4],
      ["lou", 3],
    ] as const) {
      const history = (await get(`/v1/entities/${id}/history`)).json;
      expect(history.versions.map((v: { version: number }) => v.version)).toEqual(Array.from({ length: count }, (_, i) => i + 1));
      // The stream position stays visible, for notifications that name it.
      expect(history.versions.map((v: { position: number }) => v.position)).toEqual(await positionsOf(id));
      for (const v of history.versions) {
        // recordedAt keeps milliseconds, PostgreSQL microseconds: ask a millisecond later.
        const instant = new Date(Date.parse(v.recordedAt) + 1).toISOString();
        const at = (await get(`/v1/entities/${id}/history?at=${instant}`)).json;
        expect([id, at.version]).toEqual([id, v.version]);
      }
    }

    // The notification workflow reads entities in bulk: the same versions, and the position it records.
    const current = await getEntities(t.adminDb, ["kim", "lou", "nobody"]);
    expect([...current.keys()].sort()).toEqual(["kim", "lou"]);
    expect(current.get("kim")).toMatchObject({ version: 4, position: (await positionsOf("kim"))[3] });
    expect(current.get("lou")).toMatchObject({ version: 3, position: (await positionsOf("lou"))[2] });
  });

  it("a removal is a version; re-creating continues the count", async () => {
    expect((await put("max", person("Max"))).json.version).toBe(1);
    expect(await removeEntity(t.db, "max", "test")).toBe(true);
    expect((await get("/v1/entities/max")).status).toBe(404);

    const again = await put("max", person("Max"));
    expect(again.status).toBe(201);
    expect(again.json).toMatchObject({ result: "created", version: 3, changed: ALL_FIELDS });
    const history = (await get("/v1/entities/max/history")).json;
    expect(history.versions.map((v: { version: number; type: string }) => `${v.version} ${v.type}`)).toEqual([
      "1 EntityChangedEvent",
      "2 EntityRemovedEvent",
      "3 EntityChangedEvent",
    ]);

    // The audit view numbers them the same way.
    const { rows } = await t.query("select version, position, removed from audit.entity_versions where entity_id = 'max' order by position");
    expect(rows.map((r) => [Number(r.version), Number(r.position), r.removed])).toEqual((await positionsOf("max")).map((position, i) => [i + 1, position, i === 1]));
  });
});
