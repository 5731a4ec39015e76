import { z } from "zod";
import { resendNotification } from "../../src/admin/redrive";
import { NotificationPending, NotificationView, type NotificationViewBody } from "../../src/http/schemas";
import type { NotificationView as ProjectedView } from "../../src/notification/projection";
import { Streams } from "../../src/notification/streams";
import { findRecords, getLatestById } from "../../src/streams/read";
import { waitFor } from "../helpers/db";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { enqueueNotification } from "../../src/notification/enqueue";

/**
 * The API's documented shapes against what tidings really writes: every view
 * the projection stored parses against the strict NotificationView schema,
 * and every list pages with `after` in, `next` out (the notifications list's
 * `cursor` kept as a deprecated alias).
 */

// Compile-time: what the projection builds is assignable to what the API documents (npx tsc checks it).
const projectedIsDocumented = (view: ProjectedView): NotificationViewBody => view;
void projectedIsDocumented;

let app: Tidings;
let api: TestApi;
let reader: string;
const ids: Record<string, string> = {};

beforeAll(async () => {
  app = await startTidings({ slack: { knownChannels: ["#known", "#fixed"] }, alertOnNotSent: true });
  api = await startApi(app.t);
  reader = await apiKey(app.t, ["reader"]);
  await createEntity(app.t, "both", person({ slack: "#known" }));
  await createEntity(app.t, "gone-channel", person({ slack: "#gone" }));
  await createEntity(app.t, "fallback", person({ slack: "#gone", preferences: { channels: ["slack", "email"], optedOut: [], delivery: "fallback" } }));
  await createEntity(app.t, "opted-out", person({ preferences: { channels: ["email", "slack"], optedOut: ["email", "slack"], delivery: "all" } }));
  for (const entityId of ["both", "gone-channel", "fallback", "opted-out"]) {
    ids[entityId] = (await enqueueNotification(app.t.db, { entityId, subject: `to ${entityId}`, text: "Hello.", tags: { case: entityId } })).trackingId;
  }
  for (const id of Object.values(ids)) await waitForOutcome(app.t, id);
  // An operator's resend after the channel is fixed: the view gains `resends`.
  await createEntity(app.t, "gone-channel", person({ slack: "#fixed" }));
  await resendNotification(app.t.db, { notificationId: ids["gone-channel"]!, execute: true, reason: "channel fixed", actor: "test" });
  await waitFor(
    async () => {
      const view = await getLatestById(app.t.adminDb, Streams.notificationViews, ids["gone-channel"]!);
      const payload = view?.payload as { status?: string; resends?: unknown[] } | undefined;
      return payload?.status === "sent" && payload.resends?.length === 1 ? view : undefined;
    },
    { what: "the resent notification's view to say sent" },
  );
  await waitFor(
    async () => {
      const views = await Promise.all(Object.values(ids).map((id) => getLatestById(app.t.adminDb, Streams.notificationViews, id)));
      return views.every((v) => v && (v.payload as { outcome: unknown }).outcome !== null) ? views : undefined;
    },
    { what: "every view to show its outcome" },
  );
}, 90_000);
afterAll(async () => {
  await api.close();
  await app.stop();
});

describe("a notification's view", () => {
  it("every view the projection wrote parses against the documented schema", async () => {
    const views = await findRecords(app.t.adminDb, Streams.notificationViews, { ids: Object.values(ids), limit: null });
    expect(views.length).toBeGreaterThan(Object.keys(ids).length);
    for (const view of views) {
      const parsed = NotificationView.safeParse(view.payload);
      if (!parsed.success) throw new Error(`view ${view.id} #${view.position} does not fit: ${z.prettifyError(parsed.error)}\n${JSON.stringify(view.payload)}`);
    }
    // The cases this file set out to cover were reached, so the optional fields were exercised.
    const latest = new Map(views.map((v) => [v.id, v.payload as NotificationViewBody]));
    expect(latest.get(ids.both!)).toMatchObject({ status: "sent", channels: [{ messageId: expect.any(String) }, { ts: expect.any(String) }] });
    expect(latest.get(ids.fallback!)).toMatchObject({ status: "sent", outcome: { deliveredBy: "email" } });
    expect(latest.get(ids["opted-out"]!)).toMatchObject({ status: "not_sent", skipped: expect.arrayContaining([expect.objectContaining({ channel: "email" })]) });
    expect(latest.get(ids["gone-channel"]!)!.resends).toHaveLength(1);
  });

  it("GET /v1/notifications/:id and the list answer the documented shapes", async () => {
    for (const id of Object.values(ids)) {
      const answer = await api.call("GET", `/v1/notifications/${id}`, { key: reader });
      expect(answer.status).toBe(200);
      NotificationView.parse(answer.json);
    }
    const list = await api.call("GET", "/v1/notifications?limit=100", { key: reader });
    for (const item of list.json.items) z.union([NotificationView, NotificationPending]).parse(item);
  });
});

describe("paging: `after` in, `next` out, on every list", () => {
  it("the notifications list takes `after`, and `cursor` as its deprecated alias, with the same answer", async () => {
    const first = await api.call("GET", "/v1/notifications?limit=1", { key: reader });
    expect(first.json.next).toEqual(expect.any(String));
    const byAfter = await api.call("GET", `/v1/notifications?limit=2&after=${first.json.next}`, { key: reader });
    const byCursor = await api.call("GET", `/v1/notifications?limit=2&cursor=${first.json.next}`, { key: reader });
    expect(byAfter.status).toBe(200);
    expect(byAfter.json.items).toHaveLength(2);
    expect(byAfter.json.items.map((i: { id: string }) => i.id)).not.toContain(first.json.items[0].id);
    expect(byAfter.json).toEqual(byCursor.json);
  });

  it("giving both names is refused, naming `cursor`", async () => {
    const first = await api.call("GET", "/v1/notifications?limit=1", { key: reader });
    const both = await api.call("GET", `/v1/notifications?after=${first.json.next}&cursor=${first.json.next}`, { key: reader });
    expect(both.status).toBe(400);
    expect(both.json.errors).toEqual([expect.objectContaining({ path: "cursor" })]);
  });

  it("each list walks to its end by passing `next` as `after`", async () => {
    const seen: string[] = [];
    let next: string | null = null;
    do {
      const page: { json: { items: { id: string }[]; next: string | null } } = await api.call("GET", `/v1/notifications?limit=3${next ? `&after=${next}` : ""}`, { key: reader });
      seen.push(...page.json.items.map((i) => i.id));
      next = page.json.next;
    } while (next);
    expect(seen.sort()).toEqual(Object.values(ids).sort());

    // The feed never ends: at its end, `next` is the cursor given and no event comes.
    const events: string[] = [];
    let after = "";
    for (;;) {
      const page: { json: { events: { cursor: string }[]; next: string } } = await api.call("GET", `/v1/events?limit=4${after ? `&after=${after}` : ""}`, { key: reader });
      if (page.json.events.length === 0) {
        expect(page.json.next).toBe(after);
        break;
      }
      events.push(...page.json.events.map((e) => e.cursor));
      after = page.json.next;
    }
    expect(new Set(events).size).toBe(events.length);
    expect(events.length).toBeGreaterThan(4);
  });
});
