import { readFileSync } from "node:fs";
import path from "node:path";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

/**
 * docs/streams.md lists every stream and who may write it. The registry is
 * the source of truth (tidings.streams, tidings.stream_producers); this
 * keeps the page from drifting from it.
 */
let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase(2);
});
afterAll(async () => {
  await t?.close();
});

function documented(): Map<string, string[]> {
  const page = readFileSync(path.resolve(__dirname, "../../docs/streams.md"), "utf8");
  const rows = new Map<string, string[]>();
  for (const line of page.split("\n")) {
    const cells = line.split("|").map((c) => c.trim());
    const stream = /^`([a-z_]+\.[a-z_]+)`$/.exec(cells[1] ?? "")?.[1];
    if (stream && cells.length >= 6)
      rows.set(
        stream,
        cells[4]!
          .split(",")
          .map((p) => p.trim())
          // An empty cell: a stream no actor appends to (entity.erasures: only its security-definer function does).
          .filter(Boolean)
          .sort(),
      );
  }
  return rows;
}

test("docs/streams.md names every stream and exactly its producers", async () => {
  const { rows } = await t.query<{ name: string; producers: string[] }>(
    `select s.name, coalesce(array_agg(p.actor order by p.actor) filter (where p.actor is not null), '{}') as producers
     from tidings.streams s left join tidings.stream_producers p on p.stream = s.name group by s.name order by s.name`,
  );
  expect(Object.fromEntries(documented())).toEqual(Object.fromEntries(rows.map((r) => [r.name, r.producers])));
});
