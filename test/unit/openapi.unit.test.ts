import { buildOpenApiDocument } from "../../src/http/openapi";

interface Operation {
  operationId?: string;
  parameters?: { name: string; in: string; deprecated?: boolean }[];
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
}
const doc = buildOpenApiDocument() as {
  servers?: { url: string }[];
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, { properties?: Record<string, unknown>; additionalProperties?: unknown }> };
};
const operations = Object.entries(doc.paths).flatMap(([path, methods]) => Object.entries(methods).map(([method, op]) => ({ path, method, op })));

describe("the OpenAPI document", () => {
  it("names every operation, each name once", () => {
    expect(operations.length).toBeGreaterThanOrEqual(12);
    for (const { path, method, op } of operations)
      expect({ path, method, operationId: op.operationId }).toEqual({ path, method, operationId: expect.stringMatching(/^[a-z][A-Za-z]+$/) });
    const names = operations.map((o) => o.op.operationId);
    expect(new Set(names).size).toBe(names.length);
  });

  it("says where the API is served", () => {
    expect(doc.servers?.map((s) => s.url)).toContain("/");
  });

  it("documents a notification's view as a typed, closed object, and GET /v1/notifications/{id} answers it", () => {
    const view = doc.components.schemas.NotificationView!;
    expect(view.additionalProperties).toBe(false);
    expect(Object.keys(view.properties!)).toEqual(expect.arrayContaining(["id", "status", "entity", "channels", "outcome", "skipped", "alert", "resends", "version"]));
    const answer = JSON.stringify(doc.paths["/v1/notifications/{id}"]!.get!.responses["200"]);
    expect(answer).toContain("#/components/schemas/NotificationView");
  });

  it("pages every list with `after`; the notifications list's `cursor` is a deprecated alias", () => {
    const params = (path: string) => doc.paths[path]!.get!.parameters!.filter((p) => p.in === "query");
    for (const path of ["/v1/notifications", "/v1/events"]) {
      expect(params(path).find((p) => p.name === "after")).toEqual(expect.not.objectContaining({ deprecated: true }));
    }
    expect(params("/v1/notifications").find((p) => p.name === "cursor")).toMatchObject({ deprecated: true });
    for (const page of ["NotificationList", "EventFeedPage"]) expect(Object.keys(doc.components.schemas[page]!.properties!)).toContain("next");
  });
});
