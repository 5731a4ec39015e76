import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { Writable } from "node:stream";
import { createApp } from "../../src/http/app";
import { createLogger } from "../../src/logging/logger";
import { apiKey } from "../helpers/api";
import { createTestDatabase, type TestDatabase } from "../helpers/db";

/** Log lines as they are written, and a way to wait (by event, not by time) for one that matches. */
function capturedLog() {
  const lines: Record<string, unknown>[] = [];
  const waiters: { match: (l: Record<string, unknown>) => boolean; resolve: (l: Record<string, unknown>) => void }[] = [];
  const stream = new Writable({
    write(chunk, _encoding, done) {
      const line = JSON.parse(String(chunk)) as Record<string, unknown>;
      lines.push(line);
      for (const w of waiters.filter((w) => w.match(line))) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
      done();
    },
  });
  return {
    logger: createLogger("info", "test", stream),
    lines,
    next(match: (l: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
      const found = lines.find(match);
      return found ? Promise.resolve(found) : new Promise((resolve) => waiters.push({ match, resolve }));
    },
  };
}

let t: TestDatabase;
let server: Server;
let url: string;
let key: string;
const log = capturedLog();
const accessLine = (requestId: string) => log.next((l) => l.requestId === requestId && typeof l.responseTime === "number");

beforeAll(async () => {
  t = await createTestDatabase(4);
  key = await apiKey(t, ["reader"]);
  const app = createApp({ pool: t.pool, db: t.db, logger: log.logger });
  server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, "127.0.0.1", () => resolve(s));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await t.close();
});

describe("request ids", () => {
  it("an incoming X-Request-Id is answered back, and the request's access log line carries it", async () => {
    const res = await fetch(`${url}/v1/events?limit=1`, { headers: { authorization: `Bearer ${key}`, "x-request-id": "trace-abc.123" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-request-id")).toBe("trace-abc.123");
    const line = await accessLine("trace-abc.123");
    expect(line).toMatchObject({ level: 30, req: { method: "GET", url: "/v1/events?limit=1" }, res: { statusCode: 200 } });
    expect(line.msg).toBe(`GET /v1/events?limit=1 200 ${Math.round(line.responseTime as number)}ms`);
    // Only the method and URL of a request are logged: no headers, so no API key.
    expect(JSON.stringify(line)).not.toContain(key);
  });

  it("without one, a new id is generated, answered and logged", async () => {
    const res = await fetch(`${url}/openapi.json`);
    const id = res.headers.get("x-request-id");
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const other = await fetch(`${url}/openapi.json`);
    expect(other.headers.get("x-request-id")).not.toBe(id);
    expect(await accessLine(id!)).toMatchObject({ res: { statusCode: 200 } });
  });

  it("an unusable incoming id (spaces, too long) is replaced, not echoed", async () => {
    for (const bad of ["has spaces", "x".repeat(201)]) {
      const res = await fetch(`${url}/healthz`, { headers: { "x-request-id": bad } });
      const id = res.headers.get("x-request-id");
      expect(id).not.toBe(bad);
      expect(id).toMatch(/^[0-9a-f-]{36}$/);
    }
  });

  it("a problem document names the request id, as the header and the log line do", async () => {
    const res = await fetch(`${url}/v1/events`, { headers: { "x-request-id": "no-key-1" } });
    expect(res.status).toBe(401);
    const problem = (await res.json()) as { requestId?: string };
    expect(problem.requestId).toBe("no-key-1");
    expect(await accessLine("no-key-1")).toMatchObject({ level: 30, res: { statusCode: 401 } });
  });
});
