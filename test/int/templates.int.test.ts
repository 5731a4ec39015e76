import { waitFor } from "../helpers/db";
import { apiKey, countEverything, startApi, type TestApi } from "../helpers/api";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { findRecords } from "../../src/streams/read";
import { Streams } from "../../src/notification/streams";

/**
 * Templates end to end: HTTP in (PUT a template, POST a notification naming
 * it), the real workers, the loopback SMTP server and the Slack stand-in out;
 * the client operation names the version, the channel operations carry the
 * rendered content.
 */
let app: Tidings;
let api: TestApi;
const keys = { admin: "", producer: "", reader: "" };

const REPORT_READY = {
  description: "A report is ready",
  email: {
    subject: "{{ data.report }} is ready, {{ entity.name }}",
    markdown: "Hello **{{ entity.name }}**,\n\nyour report [{{ data.report }}]({{ data.url }}) is ready.\n\n<script>alert(1)</script>",
  },
  slack: { text: "*{{ data.report }}* is ready: <{{ data.url }}|open it> (notification {{ notification.id }})" },
  locales: {
    fr: { email: { subject: "{{ data.report }} est prêt, {{ entity.name }}", text: "Bonjour {{ entity.name }}, votre rapport est prêt." } },
  },
};

beforeAll(async () => {
  app = await startTidings();
  api = await startApi(app.t);
  keys.admin = await apiKey(app.t, ["admin"]);
  keys.producer = await apiKey(app.t, ["producer"]);
  keys.reader = await apiKey(app.t, ["reader"]);
  await createEntity(app.t, "ada", person({ name: "Ada", email: "ada@example.com", slack: "U0ADA0001" }));
  await createEntity(
    app.t,
    "amelie",
    person({ name: "Amélie", email: "amelie@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" }, locale: "fr-CA" }),
  );
  await createEntity(
    app.t,
    "dieter",
    person({ name: "Dieter", email: "dieter@example.com", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" }, locale: "de" }),
  );
});
afterAll(async () => {
  await api?.close();
  await app?.stop();
});

const put = (key: string, body: unknown, as = keys.admin) => api.call("PUT", `/v1/templates/${key}`, { key: as, body });
const send = (body: unknown) => api.call("POST", "/v1/notifications", { key: keys.producer, body });

describe("a template stream: PUT appends a version, GET reads them", () => {
  it("counts versions from 1, keeps the old ones readable, and records nothing for an unchanged PUT", async () => {
    const first = await put("welcome", { email: { subject: "Welcome", text: "Hello {{ entity.name }}" } });
    expect(first.status).toBe(201);
    expect(first.json).toMatchObject({ key: "welcome", version: 1, result: "created" });
    const second = await put("welcome", { email: { subject: "Welcome aboard", text: "Hello {{ entity.name }}" } });
    expect(second.json).toMatchObject({ version: 2, result: "changed" });
    const same = await put("welcome", { email: { text: "Hello {{ entity.name }}", subject: "Welcome aboard" } });
    expect(same.json).toMatchObject({ version: 2, result: "unchanged" });

    const got = await api.call("GET", "/v1/templates/welcome", { key: keys.reader });
    expect(got.status).toBe(200);
    expect(got.json.current).toMatchObject({ version: 2, template: { email: { subject: "Welcome aboard" } } });
    expect(got.json.versions.map((v: { version: number }) => v.version)).toEqual([1, 2]);
    const v1 = await api.call("GET", "/v1/templates/welcome/versions/1", { key: keys.reader });
    expect(v1.json).toMatchObject({ version: 1, template: { email: { subject: "Welcome" } } });
    expect((await api.call("GET", "/v1/templates/welcome/versions/3", { key: keys.reader })).status).toBe(404);
    expect((await api.call("GET", "/v1/templates/nothing", { key: keys.reader })).status).toBe(404);
  });

  it("refuses a template that is not valid Liquid, naming the field, and stores nothing", async () => {
    const before = await countEverything(app.t);
    const answer = await put("broken", { email: { subject: "Hi {{ data.name ", text: "ok" }, locales: { fr: { email: { subject: "ok", text: "{% if %}" } } } });
    expect(answer.status).toBe(400);
    expect(answer.json.errors.map((e: { path: string }) => e.path)).toEqual(["email.subject", "locales.fr.email.text"]);
    expect(await countEverything(app.t)).toEqual(before);
  });

  it("needs the admin scope to write and the reader scope to read", async () => {
    expect((await put("welcome", { email: { subject: "x", text: "y" } }, keys.producer)).status).toBe(403);
    expect((await put("welcome", { email: { subject: "x", text: "y" } }, keys.reader)).status).toBe(403);
    expect((await api.call("GET", "/v1/templates/welcome", { key: keys.producer })).status).toBe(403);
  });
});

describe("POST /v1/notifications with a template", () => {
  beforeAll(async () => {
    expect((await put("report-ready", REPORT_READY)).status).toBe(201);
  });

  it("a missing variable is a 422 naming it, and nothing is stored", async () => {
    const before = await countEverything(app.t);
    const answer = await send({ entityId: "ada", template: "report-ready", data: { report: "Q3" } });
    expect(answer.status).toBe(422);
    expect(answer.json.detail).toMatch(/template "report-ready": email.markdown: undefined variable: data.url/);
    const withKey = await api.call("POST", "/v1/notifications", {
      key: keys.producer,
      headers: { "idempotency-key": "missing-var" },
      body: { entityId: "ada", template: "report-ready", data: {} },
    });
    expect(withKey.status).toBe(422);
    expect(await countEverything(app.t)).toEqual(before);
  });

  it("an unknown template key is a 422 naming it; content and template together are a 400", async () => {
    const unknown = await send({ entityId: "ada", template: "nope", data: {} });
    expect(unknown.status).toBe(422);
    expect(unknown.json.detail).toMatch(/unknown template "nope"/);
    const both = await send({ entityId: "ada", template: "report-ready", subject: "x", text: "y" });
    expect(both.status).toBe(400);
    expect(both.json.errors.map((e: { path: string }) => e.path).sort()).toEqual(["subject", "text"]);
  });

  it("renders the current version at enqueue: the client operation names it, the channel operations carry what was sent", async () => {
    const answer = await send({ entityId: "ada", template: "report-ready", data: { report: "Q3 <sales>", url: "https://reports.example.com/q3" } });
    expect(answer.status).toBe(202);
    const id = answer.json.id as string;
    await waitForOutcome(app.t, id);

    const [clientOp] = await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [id] });
    expect(clientOp!.payload).toMatchObject({ template: { key: "report-ready", version: 1, locale: null }, data: { report: "Q3 <sales>" }, subject: "Q3 <sales> is ready, Ada" });

    const mail = await waitFor(async () => app.smtp.messages.find((m) => m.to.includes("ada@example.com") && m.subject === "Q3 <sales> is ready, Ada"), { what: "Ada's email" });
    // Markdown became sanitised HTML (the variable escaped, the script gone); the text part is the Markdown.
    expect(mail.html).toContain("<strong>Ada</strong>");
    expect(mail.html).toContain('<a href="https://reports.example.com/q3">Q3 &lt;sales&gt;</a>');
    expect(mail.html).not.toMatch(/<script/i);
    expect(mail.text).toContain("your report [Q3 <sales>](https://reports.example.com/q3) is ready.");

    const [emailOp] = await findRecords(app.t.adminDb, Streams.emailOperations, { ids: [id] });
    expect(emailOp!.payload).toMatchObject({ subject: "Q3 <sales> is ready, Ada", html: expect.stringContaining("<strong>Ada</strong>") });
    const [slackOp] = await findRecords(app.t.adminDb, Streams.slackOperations, { ids: [id] });
    expect((slackOp!.payload as { mrkdwn: string }).mrkdwn).toBe(`*Q3 <sales>* is ready: <https://reports.example.com/q3|open it> (notification ${id})`);
    const post = app.slack.postsOf(`${id}:slack`)[0]!;
    // Sanitised when posted: the link stays, the stray < > of the data are escaped.
    expect(JSON.stringify(post.blocks)).toContain("*Q3 &lt;sales&gt;* is ready: <https://reports.example.com/q3|open it>");
  });

  it("chooses the entity's locale variant, by language when the region has none, and falls back to the default", async () => {
    const fr = await send({ entityId: "amelie", template: "report-ready", data: { report: "T3", url: "https://x.example" } });
    const de = await send({ entityId: "dieter", template: "report-ready", data: { report: "Q3", url: "https://x.example" } });
    expect([fr.status, de.status]).toEqual([202, 202]);
    await Promise.all([waitForOutcome(app.t, fr.json.id), waitForOutcome(app.t, de.json.id)]);
    const ops = await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [fr.json.id, de.json.id] });
    const byEntity = Object.fromEntries(ops.map((o) => [(o.payload as { entityId: string }).entityId, o.payload]));
    expect(byEntity.amelie).toMatchObject({ template: { locale: "fr" }, subject: "T3 est prêt, Amélie", text: "Bonjour Amélie, votre rapport est prêt." });
    expect(byEntity.dieter).toMatchObject({ template: { locale: null }, subject: "Q3 is ready, Dieter" });
    await waitFor(async () => app.smtp.messages.find((m) => m.to.includes("amelie@example.com") && m.subject === "T3 est prêt, Amélie"), { what: "Amélie's email in French" });
  });

  it("a new version is used from then on; the earlier notification keeps the version it was rendered with", async () => {
    await put("report-ready", { ...REPORT_READY, email: { ...REPORT_READY.email, subject: "Ready: {{ data.report }}" } });
    const answer = await send({ entityId: "dieter", template: "report-ready", data: { report: "Q4", url: "https://x.example" } });
    const [op] = await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [answer.json.id] });
    expect(op!.payload).toMatchObject({ template: { key: "report-ready", version: 2 }, subject: "Ready: Q4" });
    await waitForOutcome(app.t, answer.json.id);
  });

  it("raw subject and text keep working", async () => {
    const answer = await send({ entityId: "dieter", subject: "Plain", text: "No template." });
    expect(answer.status).toBe(202);
    const [op] = await findRecords(app.t.adminDb, Streams.notificationClientOperations, { ids: [answer.json.id] });
    expect(op!.payload).not.toHaveProperty("template");
    await waitForOutcome(app.t, answer.json.id);
  });
});

describe("POST /v1/templates/:key/preview", () => {
  // What a send would have written (the workers may still be projecting earlier notifications' views).
  const sends = async () => {
    const all = await countEverything(app.t);
    return [Streams.notificationClientOperations, Streams.emailOperations, Streams.slackOperations, Streams.templateVersions, "api.idempotency_keys"].map((k) => all[k]);
  };

  it("renders for an entity without sending anything", async () => {
    const before = await sends();
    const answer = await api.call("POST", "/v1/templates/report-ready/preview", {
      key: keys.reader,
      body: { entityId: "amelie", data: { report: "T1", url: "https://x.example" }, version: 1 },
    });
    expect(answer.status).toBe(200);
    expect(answer.json).toMatchObject({ key: "report-ready", version: 1, locale: "fr", email: { subject: "T1 est prêt, Amélie" } });
    expect(await sends()).toEqual(before);
  });

  it("without an entity, `entity` is undefined: a template using it is a 422 naming the variable", async () => {
    const answer = await api.call("POST", "/v1/templates/report-ready/preview", { key: keys.reader, body: { data: { report: "T1", url: "https://x.example" } } });
    expect(answer.status).toBe(422);
    expect(answer.json.detail).toMatch(/undefined variable: entity/);
  });
});

describe("Slack Block Kit blocks in a template", () => {
  const BLOCKS_TEMPLATE = {
    email: { subject: "{{ data.report }} is ready", text: "Open {{ data.url }}" },
    slack: {
      text: "*{{ data.report }}* is ready for {{ entity.name }}",
      blocks: [
        { type: "header", text: { type: "plain_text", text: "{{ data.report }} <!here>" } },
        {
          type: "section",
          text: { type: "mrkdwn", text: "Hello *{{ entity.name }}*, {{ data.note }}" },
          fields: [{ type: "mrkdwn", text: "<{{ data.url }}|open the report>" }],
        },
        { type: "divider" },
        { type: "actions", elements: [{ type: "button", text: { type: "plain_text", text: "Open" }, url: "{{ data.url }}", action_id: "open" }] },
      ],
    },
  };

  beforeAll(async () => {
    expect((await put("report-blocks", BLOCKS_TEMPLATE)).status).toBe(201);
  });
  // What a PUT or an enqueue would write (the projection may still be writing views of the notifications before).
  const written = async () => {
    const all = await countEverything(app.t);
    return [Streams.notificationClientOperations, Streams.emailOperations, Streams.slackOperations, Streams.templateVersions, "api.idempotency_keys"].map((k) => all[k]);
  };

  it("renders Liquid in the blocks' strings and the Slack peer receives them, with the mrkdwn text as the fallback", async () => {
    const data = { report: "Q3", url: "https://reports.example.com/q3", note: "see <!channel> & the numbers" };
    const answer = await send({ entityId: "ada", template: "report-blocks", data });
    expect(answer.status).toBe(202);
    const id = answer.json.id as string;
    await waitForOutcome(app.t, id);

    // The operation holds the rendered blocks: what was sent, for the audit and for a re-drive.
    const [slackOp] = await findRecords(app.t.adminDb, Streams.slackOperations, { ids: [id] });
    const rendered = [
      { type: "header", text: { type: "plain_text", text: "Q3 <!here>" } },
      {
        type: "section",
        text: { type: "mrkdwn", text: "Hello *Ada*, see <!channel> & the numbers" },
        fields: [{ type: "mrkdwn", text: "<https://reports.example.com/q3|open the report>" }],
      },
      { type: "divider" },
      { type: "actions", elements: [{ type: "button", text: { type: "plain_text", text: "Open" }, url: "https://reports.example.com/q3", action_id: "open" }] },
    ];
    expect(slackOp!.payload).toMatchObject({ mrkdwn: "*Q3* is ready for Ada", blocks: rendered });

    const post = app.slack.postsOf(`${id}:slack`)[0]!;
    // Posted as they are, but the mrkdwn sanitised: the data's mention shows as text, the link stays; plain_text is never formatted.
    expect(post.blocks).toEqual([
      rendered[0],
      {
        type: "section",
        text: { type: "mrkdwn", text: "Hello *Ada*, see &lt;!channel&gt; &amp; the numbers" },
        fields: [{ type: "mrkdwn", text: "<https://reports.example.com/q3|open the report>" }],
      },
      rendered[2],
      rendered[3],
    ]);
    expect(post.text).toBe("*Q3* is ready for Ada");
    expect(post.mrkdwn).toBe(true);
  });

  it("the preview shows the rendered blocks", async () => {
    const answer = await api.call("POST", "/v1/templates/report-blocks/preview", {
      key: keys.reader,
      body: { entityId: "ada", data: { report: "Q1", url: "https://x.example", note: "ok" } },
    });
    expect(answer.status).toBe(200);
    expect(answer.json.slack.mrkdwn).toBe("*Q1* is ready for Ada");
    expect(answer.json.slack.blocks[1].text.text).toBe("Hello *Ada*, ok");
    expect(answer.json.slack.blocks[3].elements[0].url).toBe("https://x.example");
  });

  it("a block with an unknown variable is a 422 naming its path at preview and at enqueue, and nothing is stored", async () => {
    const preview = await api.call("POST", "/v1/templates/report-blocks/preview", {
      key: keys.reader,
      body: { entityId: "ada", data: { report: "Q1", url: "https://x.example" } },
    });
    expect(preview.status).toBe(422);
    expect(preview.json.detail).toMatch(/template "report-blocks": slack\.blocks\.1\.text\.text: undefined variable: data\.note/);

    const before = await written();
    const answer = await send({ entityId: "ada", template: "report-blocks", data: { report: "Q1", url: "https://x.example" } });
    expect(answer.status).toBe(422);
    expect(answer.json.detail).toMatch(/slack\.blocks\.1\.text\.text: undefined variable: data\.note/);
    expect(await written()).toEqual(before);
  });

  it("refuses blocks of the wrong shape or with bad Liquid when the template is written, naming each problem, and stores nothing", async () => {
    const before = await written();
    const slack = (blocks: unknown) => ({ email: { subject: "s", text: "t" }, slack: { text: "x", blocks } });
    const cases: Array<[unknown, string, RegExp]> = [
      [{ type: "section" }, "slack.blocks", /must be an array of Block Kit blocks/],
      [[], "slack.blocks", /at least one block/],
      [Array.from({ length: 51 }, () => ({ type: "divider" })), "slack.blocks", /at most 50 blocks/],
      [["divider"], "slack.blocks.0", /must be an object with a `type`/],
      [[{ type: "divider" }, { text: "no type" }], "slack.blocks.1.type", /must be a string naming the block type/],
      [[{ type: "section", text: { type: "mrkdwn", text: "{{ data.x " } }], "slack.blocks.0.text.text", /not valid Liquid/],
    ];
    for (const [blocks, path, message] of cases) {
      const answer = await put("bad-blocks", slack(blocks));
      expect({ blocks, status: answer.status }).toEqual({ blocks, status: 400 });
      expect(answer.json.errors).toEqual([{ path, message: expect.stringMatching(message) }]);
    }
    expect(await written()).toEqual(before);
  });
});
