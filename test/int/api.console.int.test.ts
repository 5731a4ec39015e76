import http from "node:http";
import { apiKey, startApi, type TestApi } from "../helpers/api";
import { startConsoleApi } from "../browser/consoleApi";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { waitFor } from "../helpers/db";
import { createApp } from "../../src/http/app";
import { createMetrics } from "../../src/http/metrics";

/**
 * The endpoints the operator console is built on, as any API client sees
 * them: the list's new filters, a notification as of a moment, the event
 * feed as server-sent events, failures and the repairs (through the same
 * library as `npm run redrive`), health and /v1/me.
 */

let tidings: Tidings;
let api: TestApi;
let admin: string;
let reader: string;
let producer: string;

beforeAll(async () => {
  tidings = await startTidings();
  api = await startConsoleApi(tidings.t);
  admin = await apiKey(tidings.t, ["admin"], "console-admin");
  reader = await apiKey(tidings.t, ["reader"], "console-reader");
  producer = await apiKey(tidings.t, ["producer"], "console-producer");
  await createEntity(tidings.t, "ada", person({ name: "Ada", email: "ada@example.test", slack: "#ada-desk" }));
  await createEntity(tidings.t, "cy", person({ name: "Cy", email: "cy_1@example.test", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
}, 60_000);
afterAll(async () => {
  await api.close();
  await tidings.stop();
});

const get = (path: string, key = reader) => api.call("GET", path, { key });
const send = async (entityId: string, subject: string) =>
  (await api.call("POST", "/v1/notifications", { key: admin, body: { entityId, subject, text: "hello" } })).json.id as string;
const ids = (answer: { json: { items: { id: string }[] } }) => answer.json.items.map((i) => i.id);

describe("GET /v1/notifications: channel, until and text filters", () => {
  let toAda: string;
  let toCy: string;
  beforeAll(async () => {
    toAda = await send("ada", "Quarterly report");
    toCy = (
      await api.call("POST", "/v1/notifications", { key: admin, body: { entityId: "cy", subject: "Password reset: 100% done", text: "hello", tags: { category: "security" } } })
    ).json.id;
    await waitForOutcome(tidings.t, toAda);
    await waitForOutcome(tidings.t, toCy);
  });

  it("finds a notification by a recipient's address, a Slack channel, the subject or the start of its id", async () => {
    expect(ids(await get("/v1/notifications?q=ADA%40example"))).toEqual([toAda]);
    expect(ids(await get("/v1/notifications?q=%23ada-desk"))).toEqual([toAda]);
    expect(ids(await get("/v1/notifications?q=password"))).toEqual([toCy]);
    expect(ids(await get(`/v1/notifications?q=${toCy.slice(0, 8)}`))).toEqual([toCy]);
  });

  it("finds an entity's notifications by its current contact details, even those no operation sent to that address", async () => {
    // Dee gets Slack only: no operation of hers names her email address.
    await createEntity(
      tidings.t,
      "dee",
      person({ name: "Dee", email: "dee@example.test", slack: "#dee-desk", preferences: { channels: ["slack"], optedOut: [], delivery: "all" } }),
    );
    const toDee = await send("dee", "Your build finished");
    await waitForOutcome(tidings.t, toDee);
    expect(ids(await get("/v1/notifications?q=DEE%40example.test"))).toEqual([toDee]);
    // The address is matched as text like the others: a part of it, any case; not another entity's.
    expect(ids(await get("/v1/notifications?q=dee%40example"))).toEqual([toDee]);
    expect(ids(await get("/v1/notifications?q=nobody%40example.test"))).toEqual([]);
  });

  it("takes % and _ in the text literally", async () => {
    expect(ids(await get("/v1/notifications?q=%25"))).toEqual([toCy]);
    expect(ids(await get("/v1/notifications?q=y_1"))).toEqual([toCy]);
    // As a wildcard, `c_` would match "cy_1@".
    expect(ids(await get("/v1/notifications?q=c_"))).toEqual([]);
  });

  it("filters by channel and by a time before which it was requested", async () => {
    const slack = ids(await get("/v1/notifications?channel=slack"));
    expect(slack).toContain(toAda);
    expect(slack).not.toContain(toCy);
    expect(ids(await get("/v1/notifications?until=2000-01-01T00:00:00Z"))).toEqual([]);
    expect(ids(await get("/v1/notifications?until=2999-01-01T00:00:00Z"))).toEqual(expect.arrayContaining([toAda, toCy]));
  });

  it("filters by one of the client's tags (a category)", async () => {
    expect(ids(await get("/v1/notifications?tag=category%3Dsecurity"))).toEqual([toCy]);
    expect(ids(await get("/v1/notifications?tag=category%3Dbilling"))).toEqual([]);
    expect((await get("/v1/notifications?tag=category")).json.errors[0].path).toBe("tag");
  });

  it("refuses a bad filter with a 400 naming it", async () => {
    const answer = await get("/v1/notifications?channel=pigeon");
    expect(answer.status).toBe(400);
    expect(answer.json.errors[0].path).toBe("channel");
    expect((await get("/v1/notifications?q=")).json.errors[0].path).toBe("q");
  });
});

describe("GET /v1/notifications/:id?asOf", () => {
  it("answers the aggregate as it stood then: before the outcome, requested; now, sent", async () => {
    const id = await send("ada", "As of");
    await waitForOutcome(tidings.t, id);
    const { rows } = await tidings.t.query<{ type: string; recorded_at: Date }>("select type, recorded_at from notification.events where id = $1 order by position", [id]);
    const first = rows[0]!.recorded_at.toISOString();
    const then = await get(`/v1/notifications/${id}?asOf=${first}`);
    expect(then.status).toBe(200);
    // The first events share their transaction's time: all of them, and only them, are folded.
    const atFirst = rows.filter((r) => r.recorded_at.getTime() === rows[0]!.recorded_at.getTime()).length;
    expect(atFirst).toBeLessThan(rows.length);
    expect(then.json).toMatchObject({ id, asOf: first, fromSnapshot: null, eventsApplied: atFirst });
    expect(["requested", "sending"]).toContain(then.json.aggregate.status);
    const now = await get(`/v1/notifications/${id}?asOf=${new Date(Date.now() + 1000).toISOString()}`);
    expect(now.json.aggregate.status).toBe("sent");
    expect(now.json.eventsApplied + (now.json.fromSnapshot ?? 0)).toBeGreaterThanOrEqual(rows.length);
  });

  it("a time before its first event: 404 saying when it was requested; a bad time: 400", async () => {
    const id = await send("ada", "Too early");
    const before = await get(`/v1/notifications/${id}?asOf=2000-01-01T00:00:00Z`);
    expect(before.status).toBe(404);
    expect(before.json.detail).toMatch(/had no events yet/);
    expect((await get(`/v1/notifications/${id}?asOf=yesterday`)).status).toBe(400);
  });
});

/** Read a server-sent event stream until `count` events came; the raw HTTP so Last-Event-ID can be sent. */
function readStream(
  path: string,
  headers: Record<string, string>,
  count: number,
  wanted: (data: any) => boolean = () => true,
  onOpen: () => void = () => {},
): Promise<{ status: number; events: { id: string; type: string; data: any }[] }> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${api.url}${path}`, { headers }, (res) => {
      const events: { id: string; type: string; data: any }[] = [];
      let buffer = "";
      if (res.statusCode !== 200) {
        res.resume();
        resolve({ status: res.statusCode!, events });
        return;
      }
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        buffer += chunk;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          // The server's first words: from here on, what is written reaches this stream.
          if (block.split("\n").some((l) => l.startsWith(": stream open after "))) onOpen();
          const line = (name: string) =>
            block
              .split("\n")
              .find((l) => l.startsWith(`${name}: `))
              ?.slice(name.length + 2);
          if (line("data") && wanted(JSON.parse(line("data")!))) events.push({ id: line("id")!, type: line("event")!, data: JSON.parse(line("data")!) });
          if (events.length >= count) {
            req.destroy();
            resolve({ status: 200, events });
          }
        }
      });
    });
    req.on("error", (e) => (e.message.includes("socket hang up") ? undefined : reject(e)));
  });
}

describe("GET /v1/events/stream", () => {
  it("streams the feed's events with their cursors as ids, and resumes after Last-Event-ID, missing none and repeating none", async () => {
    const auth = { authorization: `Bearer ${reader}` };
    const feed = (await get("/v1/events?limit=1000")).json.events as { cursor: string; id: string }[];
    expect(feed.length).toBeGreaterThan(4);
    const first = await readStream("/v1/events/stream", auth, 3);
    expect(first.events.map((e) => e.id)).toEqual(feed.slice(0, 3).map((e) => e.cursor));
    expect(first.events[0]!.data).toEqual(feed[0]);
    const resumed = await readStream("/v1/events/stream", { ...auth, "last-event-id": first.events[2]!.id }, 2);
    expect(resumed.events.map((e) => e.id)).toEqual(feed.slice(3, 5).map((e) => e.cursor));
  });

  it("from `now`: only events written after it connected", async () => {
    const auth = { authorization: `Bearer ${reader}` };
    const before = new Set(((await get("/v1/events?limit=1000")).json.events as { cursor: string }[]).map((e) => e.cursor));
    // Known before the send, so the notification's first event is recognised however soon it comes.
    const subject = `Live ${Date.now()}`;
    const seen: { cursor: string }[] = [];
    let opened!: () => void;
    const open = new Promise<void>((resolve) => (opened = resolve));
    const live = readStream(
      "/v1/events/stream?after=now",
      auth,
      1,
      (data) => {
        seen.push(data);
        return data.type === "SendNotificationRequestedEvent" && data.payload?.subject === subject;
      },
      opened,
    );
    // This stream's own start (not another stream's wait, which a metric would also count).
    await open;
    const id = await send("ada", subject);
    const { events } = await live;
    // The new notification's first event, and nothing from before it connected.
    expect(events[0]!.data.id).toBe(id);
    expect(seen.filter((e) => before.has(e.cursor))).toEqual([]);
  });

  it("ends when the process stops, so the server can close", async () => {
    const stopping = new AbortController();
    const metrics = createMetrics();
    const app = createApp({ pool: tidings.t.pool, db: tidings.t.db, feedPollMs: 50, stopping: stopping.signal, metrics });
    const server = await new Promise<http.Server>((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    const port = (server.address() as { port: number }).port;
    const ended = new Promise<string>((resolve, reject) => {
      http
        .get(`http://127.0.0.1:${port}/v1/events/stream?after=now`, { headers: { authorization: `Bearer ${reader}` } }, (res) => {
          // Its connection ends with it: nothing keeps server.close() waiting.
          expect(res.headers.connection).toBe("close");
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => (text += c));
          res.on("end", () => resolve(text));
        })
        .on("error", reject);
    });
    // Once the stream waits on the poller, stop: it must end by itself, and close() finish.
    await waitFor(async () => ((await metrics.feedWaiting.get()).values[0]!.value > 0 ? true : null), { what: "the stream to wait" });
    stopping.abort();
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    expect(await ended).toMatch(/^retry: 2000\n: stream open after /);
    await closed;
  });

  it("refuses a bad cursor (400) and a key without the reader scope (403)", async () => {
    expect((await readStream("/v1/events/stream", { authorization: `Bearer ${reader}`, "last-event-id": "nope" }, 1)).status).toBe(400);
    expect((await readStream("/v1/events/stream?after=x-1", { authorization: `Bearer ${reader}` }, 1)).status).toBe(400);
    expect((await readStream("/v1/events/stream", { authorization: `Bearer ${producer}` }, 1)).status).toBe(403);
  });
});

describe("failures and repairs over HTTP", () => {
  let failed: string;
  beforeAll(async () => {
    tidings.smtp.rejectRecipient("cy_1@example.test", 550, "5.1.1 no such mailbox");
    failed = await send("cy", "Will fail");
    await waitForOutcome(tidings.t, failed);
    tidings.smtp.reset();
  });

  it("lists the failure grouped by channel and error, to a reader", async () => {
    const answer = await get("/v1/admin/failures");
    expect(answer.status).toBe(200);
    const group = answer.json.failed.find((g: any) => g.records.some((r: any) => r.id === failed));
    expect(group).toMatchObject({ channel: "email", stream: "email.operations", concern: "email_bot", count: 1 });
    expect(group.error).toMatch(/no such mailbox/);
    // What an operator recognises the record by: the entity, the recipient, the subject.
    expect(group.records.find((r: any) => r.id === failed)).toMatchObject({
      entity: { id: "cy", name: expect.any(String) },
      destination: expect.stringMatching(/@example\.test$/),
      subject: "Will fail",
    });
    expect(answer.json.archived).toEqual({ days: 7, count: 0, lastAt: null, resent: { count: 0, lastAt: null } });
  });

  it("tells a failed notification's story in order: a cause before its effects, the notification's records before the alert they set off", async () => {
    // The alert is written after the failure outcome, in its own transactions: wait for its email to be sent.
    const records = await waitFor(
      async () => {
        const answer = (await get(`/v1/notifications/${failed}/events`)).json.records as { stream: string; position: number; type: string; payload: any; causedBy: any }[];
        return answer.some((r) => r.stream === "email.events" && r.type === "SucceededInSendingEmailEvent") ? answer : null;
      },
      { what: "the internal alert's email to be sent", timeoutMs: 20_000 },
    );
    const at = (test: (r: (typeof records)[number]) => boolean) => records.findIndex(test);
    expect(records[0]!.type).toBe("SendNotificationToEntityOp");
    for (const [i, r] of records.entries()) {
      if (!r.causedBy) continue;
      const cause = at((c) => c.stream === r.causedBy.stream && c.position === r.causedBy.position);
      if (cause >= 0) expect({ record: `${r.stream}#${r.position}`, causeFirst: cause < i }).toEqual({ record: `${r.stream}#${r.position}`, causeFirst: true });
    }
    // Written in one transaction each: the notification's event first, then what it sends.
    expect(at((r) => r.type === "SendNotificationRequestedEvent")).toBeLessThan(at((r) => r.type === "SendEmailOp" && r.payload.purpose === "notification"));
    expect(at((r) => r.type === "FailedNotificationSentToInternalTeamEvent")).toBeLessThan(at((r) => r.type === "SendEmailOp" && r.payload.purpose === "internal_alert"));
    expect(at((r) => r.type === "SendEmailOp" && r.payload.purpose === "notification")).toBeLessThan(at((r) => r.type === "AlertInternalTeamOp"));
  });

  const operatorChanges = async () => (await tidings.t.query("select count(*)::int as n from audit.redrives where record_id = $1", [failed])).rows[0].n;

  it("refuses to act for a reader (403), without a reason (400), and without naming records (400); none of it changes anything", async () => {
    const asReader = await api.call("POST", "/v1/admin/actions/redrive-failed", { key: reader, body: { notification: failed } });
    expect(asReader.status).toBe(403);
    const noReason = await api.call("POST", "/v1/admin/actions/redrive-failed", { key: admin, body: { notification: failed, execute: true } });
    expect(noReason.status).toBe(400);
    expect(noReason.json.detail).toMatch(/without a reason/);
    const nothingNamed = await api.call("POST", "/v1/admin/actions/redrive-failed", { key: admin, body: { execute: true, reason: "all of it" } });
    expect(nothingNamed.status).toBe(400);
    expect((await api.call("POST", "/v1/admin/actions/reboot", { key: admin, body: { notification: failed } })).status).toBe(400);
    expect(await operatorChanges()).toBe(0);
    expect((await get("/v1/admin/failures")).json.failed.some((g: any) => g.records.some((r: any) => r.id === failed))).toBe(true);
  });

  it("a dry run says what would change and changes nothing; executed, the record is re-driven with the key as actor and the reason, and the notification is sent", async () => {
    const dry = await api.call("POST", "/v1/admin/actions/redrive-failed", { key: admin, body: { notification: failed } });
    expect(dry.status).toBe(200);
    expect(dry.json).toMatchObject({
      verb: "redrive-failed",
      dryRun: true,
      selected: 1,
      changed: 0,
      // A 5.1.1 bounce is a permanent failure: re-driving it repeats it, which the dry run says.
      changes: [{ id: failed, status: "Failed", to: "AvailableAfterFailure", outcome: "would change", failure: "permanent" }],
    });
    expect(await operatorChanges()).toBe(0);

    const done = await api.call("POST", "/v1/admin/actions/redrive-failed", { key: admin, body: { notification: failed, execute: true, reason: "mailbox fixed" } });
    expect(done.json).toMatchObject({ dryRun: false, changed: 1, actor: "api-key:console-admin", reason: "mailbox fixed" });
    expect(done.json.changes[0].failure).toBeNull();
    expect(done.json.changes[0].details).toMatchObject({ tool: "redrive", verb: "redrive-failed", redriveOf: { lastError: expect.stringMatching(/no such mailbox/) } });
    // The same lineage `npm run redrive` writes, in the same audit view.
    const { rows } = await tidings.t.query("select actor, reason, details->>'verb' as verb from audit.redrives where record_id = $1", [failed]);
    expect(rows).toEqual([{ actor: "api-key:console-admin", reason: "mailbox fixed", verb: "redrive-failed" }]);
    await waitFor(async () => ((await get(`/v1/notifications/${failed}`)).json.status === "sent" ? true : null), {
      what: "the re-driven notification to be sent",
      timeoutMs: 20_000,
    });
  });

  it("resend: a dry run names the failed operation's destination and the entity's current one", async () => {
    tidings.smtp.rejectRecipient("cy_1@example.test", 550, "5.1.1 no such mailbox");
    const again = await send("cy", "Fails again");
    await waitForOutcome(tidings.t, again);
    tidings.smtp.reset();
    // The entity not corrected yet: the resend would go to the address that bounced, which the dry run says.
    const same = await api.call("POST", "/v1/admin/resend", { key: admin, body: { notification: again } });
    expect(same.json.channels).toEqual([
      expect.objectContaining({
        channel: "email",
        destination: "cy_1@example.test",
        sameDestination: true,
        previous: expect.objectContaining({ destination: "cy_1@example.test", failure: "permanent" }),
      }),
    ]);
    await createEntity(tidings.t, "cy", person({ name: "Cy", email: "cy.new@example.test", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    const dry = await api.call("POST", "/v1/admin/resend", { key: admin, body: { notification: again } });
    expect(dry.json.channels[0]).toMatchObject({ sameDestination: false, previous: { failure: "permanent" } });
    expect(dry.status).toBe(200);
    expect(dry.json).toMatchObject({
      verb: "resend",
      dryRun: true,
      request: null,
      channels: [{ channel: "email", destination: "cy.new@example.test", previous: { destination: "cy_1@example.test" } }],
    });
    const noReason = await api.call("POST", "/v1/admin/resend", { key: admin, body: { notification: again, execute: true } });
    expect(noReason.status).toBe(400);
    const done = await api.call("POST", "/v1/admin/resend", { key: admin, body: { notification: again, execute: true, reason: "new address" } });
    expect(done.json).toMatchObject({ dryRun: false, actor: "api-key:console-admin", request: { stream: "notification.internal_operations" } });
    // The resend archived the failed operation it replaces: counted as resent, not as archived by an operator.
    const failures = await get("/v1/admin/failures");
    expect(failures.json.archived).toMatchObject({ count: 0, lastAt: null, resent: { count: 1, lastAt: expect.any(String) } });
  });

  it("in an app built without the operator tools, the repairs answer 404 saying why", async () => {
    const bare = await startApi(tidings.t);
    try {
      const answer = await bare.call("POST", "/v1/admin/actions/redrive-failed", { key: admin, body: { notification: failed } });
      expect(answer.status).toBe(404);
      expect(answer.json.detail).toMatch(/no operatorTools/);
    } finally {
      await bare.close();
    }
  });

  it("resend of a notification that did not fail: 409 saying so", async () => {
    const ok = await send("ada", "Fine");
    await waitForOutcome(tidings.t, ok);
    const answer = await api.call("POST", "/v1/admin/resend", { key: admin, body: { notification: ok } });
    expect(answer.status).toBe(409);
    expect(answer.json.detail).toMatch(/nothing failed to resend/);
  });
});

describe("GET /v1/health and /v1/me", () => {
  it("answers workers, queues, lag, failures and stream sizes", async () => {
    // Sizes are the catalogue's estimates: as of the last ANALYZE.
    await tidings.t.query("analyze");
    const answer = await get("/v1/health");
    expect(answer.json.detail).toBeUndefined();
    expect(answer.status).toBe(200);
    expect(answer.json.workers).toHaveLength(1);
    expect(answer.json.workers[0].ageSeconds).toBeLessThan(60);
    // notification.events is partitioned (migration 0005): its partitions are counted, not its empty parent.
    const events = answer.json.streams.find((s: any) => s.stream === "notification.events");
    const { rows } = await tidings.t.query("select count(*)::int as n from notification.events");
    expect(rows[0].n).toBeGreaterThan(0);
    expect(events).toEqual({ stream: "notification.events", estimatedRows: rows[0].n, bytes: expect.any(Number) });
    expect(events.bytes).toBeGreaterThan(0);
    expect(answer.json).toEqual(
      expect.objectContaining({ queue: expect.any(Array), lag: expect.any(Array), failedWaiting: expect.any(Array), failuresPerHour: expect.any(Array) }),
    );
  });

  it("names the key and its scopes", async () => {
    expect((await get("/v1/me")).json).toEqual({ name: "console-reader", scopes: ["reader"] });
    expect((await get("/v1/me", producer)).status).toBe(403);
  });
});

describe("GET /v1/templates", () => {
  it("lists every template by key with its current version, a page at a time", async () => {
    const put = async (key: string, subject: string, extra: Record<string, unknown> = {}) =>
      expect((await api.call("PUT", `/v1/templates/${key}`, { key: admin, body: { email: { subject, text: "Hello." }, ...extra } })).status).toBeLessThan(300);
    await put("b-digest", "Digest");
    await put("a-welcome", "Welcome", { description: "First mail" });
    await put("a-welcome", "Welcome!", { description: "First mail", locales: { fr: { email: { subject: "Bienvenue", text: "Bonjour." } } } });
    await put("c-reset", "Reset");
    const first = await get("/v1/templates?limit=2");
    expect(first.status).toBe(200);
    expect(first.json.items).toEqual([
      { key: "a-welcome", version: 2, description: "First mail", locales: ["fr"], updatedAt: expect.any(String), updatedBy: expect.stringContaining("console-admin") },
      { key: "b-digest", version: 1, description: null, locales: [], updatedAt: expect.any(String), updatedBy: expect.any(String) },
    ]);
    expect(first.json.next).toBe("b-digest");
    const second = await get(`/v1/templates?limit=2&after=${first.json.next}`);
    expect(second.json).toEqual({ items: [expect.objectContaining({ key: "c-reset", version: 1 })], next: null });
  });

  it("refuses a bad limit (400 naming it) and a key without the reader scope (403)", async () => {
    const bad = await get("/v1/templates?limit=0");
    expect(bad.status).toBe(400);
    expect(bad.text).toContain("limit");
    expect((await get("/v1/templates", producer)).status).toBe(403);
  });
});

describe("/console", () => {
  it("serves the page under a Content-Security-Policy that runs only its own scripts", async () => {
    const page = await api.call("GET", "/console/");
    expect(page.status).toBe(200);
    expect(page.text).toContain('<script type="module" src="app.js"></script>');
    expect(page.headers.get("content-security-policy")).toMatch(/default-src 'self'/);
    expect(page.headers.get("content-security-policy")).not.toMatch(/script-src[^;]*unsafe-inline/);
    expect((await api.call("GET", "/console/app.js")).contentType).toMatch(/javascript/);
  });
});
