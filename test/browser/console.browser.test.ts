import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import pg from "pg";
import { chromium, type Browser, type Page } from "playwright-core";
import { apiKey, type TestApi } from "../helpers/api";
import { waitFor } from "../helpers/db";
import { HOST_NETWORK, takeTurn } from "../helpers/turns";
import { startConsoleApi } from "./consoleApi";
import { createEntity, person, startTidings, waitForOutcome, type Tidings } from "../helpers/tidings";
import { PROJECTION_CHECKPOINT } from "../../src/notification/projection.bot";

/**
 * The operator console in a real browser (Debian's Chromium, headless,
 * driven by playwright-core) against a real tidings: the API with the
 * console, every bot in real workers, a loopback SMTP server and the Slack
 * stand-in. Each page is photographed into docs/console/ for the README.
 */

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const SHOTS = path.join(__dirname, "..", "..", "docs", "console");
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) {
  console.warn(`SKIPPED: the console's browser tests need Chromium at ${CHROMIUM} (apt-get install chromium; .ci/run installs it), or CHROMIUM_PATH`);
}
const describeWithBrowser = haveChromium ? describe : describe.skip;

jest.setTimeout(90_000);

describeWithBrowser("the operator console, in Chromium", () => {
  let tidings: Tidings;
  let api: TestApi;
  let admin: string;
  let reader: string;
  let browser: Browser;
  let page: Page;

  const send = async (entityId: string, subject: string, extra: Record<string, unknown> = {}) => {
    const answer = await api.call("POST", "/v1/notifications", { key: admin, body: { entityId, subject, text: `${subject}: hello from tidings.`, ...extra } });
    expect(answer.status).toBe(202);
    return answer.json.id as string;
  };
  const shot = (name: string) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
  const signIn = async (p: Page, key: string) => {
    await p.goto(`${api.url}/console/`);
    await p.getByLabel(/API key/).fill(key);
    await p.getByRole("button", { name: "Sign in" }).click();
    await p.getByRole("navigation", { name: "Console pages" }).waitFor();
  };

  let releaseNetwork: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    // Not while the several-hosts test changes this host's interfaces (test/helpers/turns.ts).
    releaseNetwork = await takeTurn(HOST_NETWORK);
    mkdirSync(SHOTS, { recursive: true });
    tidings = await startTidings();
    api = await startConsoleApi(tidings.t);
    admin = await apiKey(tidings.t, ["admin"], "ops-admin");
    reader = await apiKey(tidings.t, ["reader"], "ops-reader");
    await createEntity(
      tidings.t,
      "ada",
      person({ name: "Ada Lovelace", email: "ada@example.test", slack: "#ada-alerts", preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all" } }),
    );
    await createEntity(
      tidings.t,
      "bob",
      person({ name: "Bob Builder", email: "bob@example.test", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }),
    );
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox", "--disable-background-networking"] });
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    // What the page could not load or run, printed: a page that renders nothing
    // otherwise fails with a bare timeout (seen once in CI, not reproduced).
    page.on("pageerror", (error) => console.warn(`console page error: ${error.message}`));
    page.on("requestfailed", (request) => {
      // A live stream is aborted whenever the page moves on: expected.
      if (request.failure()?.errorText !== "net::ERR_ABORTED") console.warn(`console request failed: ${request.method()} ${request.url()}: ${request.failure()?.errorText}`);
    });
    page.on("response", (response) => {
      if (response.status() >= 500) console.warn(`console request answered ${response.status()}: ${response.url()}`);
    });
    // Long enough to wait for the several-hosts test's turn to end.
  }, 300_000);
  afterAll(async () => {
    await browser?.close();
    await api?.close();
    await tidings?.stop();
    await releaseNetwork?.();
  });

  it("signs in with an API key typed into a password field, and refuses a wrong one", async () => {
    await page.goto(`${api.url}/console/`);
    const field = page.getByLabel(/API key/);
    expect(await field.getAttribute("type")).toBe("password");
    // Before sign-in there is nothing to navigate to.
    await expect(page.getByRole("navigation", { name: "Console pages" }).isVisible()).resolves.toBe(false);
    await shot("signin");
    await field.fill("tdk_not-a-key");
    await page.getByRole("button", { name: "Sign in" }).click();
    await page.getByRole("alert").filter({ hasText: "not valid" }).waitFor();
    await signIn(page, admin);
    await page.getByText("ops-admin · admin").waitFor();
  });

  it("finds a notification by its recipient's address, and opens its story", async () => {
    // HTML with a script, which the console must show without running.
    const html = `<h1>Invoice 42</h1><p>Amount due: 10 EUR</p><script>parent.document.title = "script ran"; document.body.append("script ran")</script>`;
    const id = await send("ada", "Your invoice is ready", { html });
    await waitForOutcome(tidings.t, id);
    await send("bob", "Something else");
    await page.goto(`${api.url}/console/#/activity`);
    await page.getByLabel(/^Search/).fill("ada@example");
    await page.getByRole("button", { name: "Filter" }).click();
    const rows = page.locator("#activity tbody tr");
    await rows.filter({ hasText: "Your invoice is ready" }).waitFor();
    // The unfiltered list (which has Bob's row too) replaced by the filtered one.
    await rows.filter({ hasText: "Something else" }).waitFor({ state: "detached" });
    await expect(rows.count()).resolves.toBe(1);
    await rows.first().getByText("sent").first().waitFor();
    await shot("activity");

    await page.getByRole("link", { name: id }).click();
    await page.getByRole("heading", { name: "Email as sent" }).waitFor();
    const email = page.getByRole("article", { name: /^Email / }).first();
    await email.getByText("ada@example.test").waitFor();
    await page.getByRole("heading", { name: "Slack message as posted" }).waitFor();
    await page.getByText("#ada-alerts").first().waitFor();
    // The story: every record, starting with the client's operation.
    await page.locator("ol.trail > li").first().getByText("SendNotificationToEntityOp").waitFor();
    await page.locator("ol.trail > li strong", { hasText: "SentOnAllPreparedChannelsEvent" }).first().waitFor();
    // The email's HTML is shown in a sandbox without scripts.
    const frames = page.locator("iframe.email");
    await expect(frames.count()).resolves.toBe(1);
    expect(await frames.getAttribute("sandbox")).toBe("");
    await page.frameLocator("iframe.email").getByRole("heading", { name: "Invoice 42" }).waitFor();
    await expect(page.frameLocator("iframe.email").getByText("script ran").count()).resolves.toBe(0);
    await expect(page.title()).resolves.toBe("tidings console");
    // As of the moment it was requested: the aggregate then.
    await page.getByRole("button", { name: "Show" }).click();
    await page.getByText(/As of .*folded from|snapshot at event/).waitFor();
    await shot("story");

    // "As of now", in whole seconds, includes what was written earlier in the
    // same second (rounded down, a notification just requested "had no events
    // yet"). A tab of its own whose clock stands still at the very moment of
    // the notification's first event, so the other tests' clock runs.
    const { rows: first } = await tidings.t.query<{ at: Date }>("select min(recorded_at) as at from notification.events where id = $1", [id]);
    const still = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    try {
      await still.clock.setFixedTime(first[0]!.at);
      await signIn(still, admin);
      await still.goto(`${api.url}/console/#/notifications/${id}`);
      await still.getByRole("button", { name: "Show" }).click();
      await still.getByText(/As of .*folded from|snapshot at event/).waitFor();
    } finally {
      await still.close();
    }
  });

  it("shows a new notification live, without reloading", async () => {
    await page.goto(`${api.url}/console/#/activity`);
    await page.getByText("Live: new and changed notifications appear here.").waitFor();
    // A mark on this page: it is gone if the page reloads.
    await page.evaluate("window.stillTheSamePage = true");
    const id = await send("ada", "Arrives while you watch");
    const row = page.locator(`#activity tbody tr[data-id="${id}"]`);
    await row.getByText("Arrives while you watch").waitFor();
    // Its outcome changes in place as the events arrive: sent, on both channels.
    await row.locator("td[data-label=Outcome] .badge", { hasText: "sent" }).waitFor();
    await expect(row.locator("td[data-label=Channels] .badge", { hasText: "sent" }).count()).resolves.toBe(2);
    await expect(page.evaluate("window.stillTheSamePage")).resolves.toBe(true);
    // Every event received is on the page: nothing is left to look for again.
    await page.locator("#live-state[data-pending='0']").waitFor({ state: "attached" });
  });

  it("catches up a row whose view lagged its events when the page opened, though no live event names it", async () => {
    await createEntity(
      tidings.t,
      "cyd",
      person({ name: "Cyd Charisse", email: "cyd@example.test", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }),
    );
    // The projection is held: each of its batches takes this lock first, and
    // skips the batch while another session has it.
    const hold = new pg.Client({ connectionString: tidings.t.url });
    await hold.connect();
    try {
      await hold.query("select pg_advisory_lock(hashtextextended($1, 0))", [`checkpoint ${PROJECTION_CHECKPOINT}`]);
      const id = await send("cyd", "Sent while the views stood still");
      await waitForOutcome(tidings.t, id);
      // Every event is written before the page opens: the live stream will not name this notification.
      await page.goto(`${api.url}/console/#/activity?entityId=cyd`);
      const row = page.locator(`#activity tbody tr[data-id="${id}"]`);
      await row.waitFor();
      await expect(row.locator("td[data-label=Outcome] .badge", { hasText: "sent" }).count()).resolves.toBe(0);
      // The list said its view lags: the page is looking again.
      await page.locator("#live-state[data-pending]:not([data-pending='0'])").waitFor({ state: "attached" });
      await hold.query("select pg_advisory_unlock(hashtextextended($1, 0))", [`checkpoint ${PROJECTION_CHECKPOINT}`]);
      await row.locator("td[data-label=Outcome] .badge", { hasText: "sent" }).waitFor();
      await page.locator("#live-state[data-pending='0']").waitFor({ state: "attached" });
    } finally {
      await hold.end();
    }
  });

  it("keeps the rows 'Load more' added when a live update reloads the list", async () => {
    await createEntity(tidings.t, "dee", person({ name: "Dee Dee", email: "dee@example.test", slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    for (let i = 0; i < 55; i++) await send("dee", `Page test ${i}`);
    await page.goto(`${api.url}/console/#/activity?entityId=dee`);
    const rows = page.locator("#activity tbody tr");
    const rowCount = (n: number) => waitFor(async () => (await rows.count()) === n, { what: `${n} rows on Activity` });
    await rowCount(50);
    await page.getByRole("button", { name: "Load more" }).click();
    await rowCount(55);
    await page.getByRole("button", { name: "Load more" }).waitFor({ state: "hidden" });
    // A notification arrives: the list reloads live, and still shows every row loaded.
    const id = await send("dee", "After load more");
    await page.locator(`#activity tbody tr[data-id="${id}"]`).waitFor();
    await rowCount(56);
    await expect(rows.filter({ hasText: "Page test 0" }).count()).resolves.toBe(1);
  });

  it("re-drives a failure: a dry run, then executed with a reason; the outcome changes", async () => {
    tidings.smtp.rejectRecipient("bob@example.test", 550, "5.1.1 <bob@example.test>: no such mailbox");
    const id = await send("bob", "Password reset");
    await waitForOutcome(tidings.t, id);
    tidings.smtp.reset();

    await page.goto(`${api.url}/console/#/failures`);
    const group = page.getByRole("region", { name: /email · email_bot: 1 failed/ });
    await group.getByText("no such mailbox").waitFor();
    const row = group.locator("tr", { hasText: id });
    // Whose it is, where it went and what it was, beside the tracking id.
    await expect(row.getByRole("link", { name: "Bob Builder (bob)" }).getAttribute("href")).resolves.toBe("#/entities/bob");
    await row.locator("td[data-label=Recipient]", { hasText: "bob@example.test" }).waitFor();
    await row.locator("td[data-label=Notification]", { hasText: "Password reset" }).waitFor();
    await row.getByRole("button", { name: "Re-drive…" }).click();
    const panel = page.getByRole("region", { name: /Re-drive record .*: dry run/ });
    await panel.getByText("1 record(s) would change").waitFor();
    // The keyboard is in the panel, not left on the button (or dropped on the page's body).
    await expect(panel.evaluate((el) => el.contains((globalThis as unknown as { document: { activeElement: unknown } }).document.activeElement as typeof el))).resolves.toBe(true);
    // A 5.1.1 bounce is permanent: the dry run says so beside the buttons, naming them.
    const warning = panel.getByText("This failure is permanent.");
    await warning.waitFor();
    await panel.getByText(/“Execute” would send the same message to the same address again.*then use “Resend to current details…” here/).waitFor();
    await expect(panel.getByRole("button", { name: "Execute" }).getAttribute("aria-describedby")).resolves.toMatch(/^permanent-/);
    // The entity to correct is a link away.
    await expect(panel.locator(".notice.bad").getByRole("link", { name: "Bob Builder (bob)" }).getAttribute("href")).resolves.toBe("#/entities/bob");
    await shot("failures");
    // No reason, no action.
    await panel.getByRole("button", { name: "Execute" }).click();
    await panel.getByRole("alert").getByText("A reason is required").waitFor();
    await panel.getByLabel(/Reason/).fill("mailbox restored by the customer");
    await panel.getByRole("button", { name: "Execute" }).click();
    await page.getByText("Executed by api-key:ops-admin, reason: “mailbox restored by the customer”.").waitFor();

    await page.goto(`${api.url}/console/#/notifications/${id}`);
    await page.locator("#status").getByText("sent", { exact: true }).waitFor({ timeout: 20_000 });
    await page.locator("ol.trail").getByText("mailbox restored by the customer").first().waitFor({ state: "attached" });
    // The notification's own email first; the alert its failure set off under a heading of its own, after it.
    await page.getByRole("heading", { name: "Alert email to the internal team" }).waitFor();
    const headings = await page.locator("#story h2").allTextContents();
    expect(headings.indexOf("Email as sent")).toBe(0);
    expect(headings.indexOf("Alert email to the internal team")).toBeGreaterThan(0);
    await shot("story-after-redrive");
  });

  it("archives the last failure: the page says nothing waits any more, and that one was archived", async () => {
    tidings.smtp.rejectRecipient("bob@example.test", 550, "5.1.1 <bob@example.test>: no such mailbox");
    const id = await send("bob", "Invoice reminder");
    await waitForOutcome(tidings.t, id);
    tidings.smtp.reset();
    await page.goto(`${api.url}/console/#/failures`);
    const row = page.locator("tr", { hasText: id });
    await row.getByRole("button", { name: "Archive…" }).click();
    const panel = page.getByRole("region", { name: /Archive record .*: dry run/ });
    await panel.getByLabel(/Reason/).fill("the customer left; nothing to send");
    await panel.getByRole("button", { name: "Execute" }).click();
    await page.getByText("Nothing is waiting for an operator").waitFor();
    await page.locator("#archived", { hasText: "1 failure was archived by an operator in the last 7 days" }).waitFor();
    await expect(page.getByText("Nothing has failed").count()).resolves.toBe(0);
  });

  it("resends to an address that bounced for good: the dry run warns it would fail again, the panel fits; executed, the page says what was done and that it was delivered", async () => {
    const long = "carol.has.an.address.long.enough.to.reach.past.a.narrow.panel@subdomain-of-a-mail-host.example.test";
    await createEntity(tidings.t, "carol", person({ name: "Carol", email: long, slack: null, preferences: { channels: ["email"], optedOut: [], delivery: "all" } }));
    tidings.smtp.rejectRecipient(long, 550, "5.1.1 no such mailbox");
    const id = await send("carol", "Your order shipped");
    await waitForOutcome(tidings.t, id);
    // From another page: the previous test left the Failures page open, and the same address would not load it again.
    await page.goto(`${api.url}/console/#/activity`);
    await page.goto(`${api.url}/console/#/failures`);
    const row = page.locator("tr", { hasText: id });
    await row.getByRole("button", { name: "Resend to current details…" }).click();
    const panel = page.getByRole("region", { name: /Resend to current details record .*: dry run/ });
    // The entity still has the address that bounced: a warning like a re-drive's, with a link to the entity.
    const warning = panel.locator(".notice.bad");
    await warning.getByText("This would fail again: correct the entity's email address first.").waitFor();
    await expect(warning.getByRole("link", { name: "entity carol" }).getAttribute("href")).resolves.toBe("#/entities/carol");
    await expect(panel.getByRole("button", { name: "Execute" }).getAttribute("aria-describedby")).resolves.toBe(await warning.getAttribute("id"));
    await expect(panel.getByRole("button", { name: "Execute" }).isEnabled()).resolves.toBe(true);
    // In the console's words, not the command line's.
    await expect(panel.getByText(/redrive-failed|--execute|--channel/).count()).resolves.toBe(0);
    // Nothing in the panel runs past its edge or off the screen, at a laptop's width and a phone's.
    const fits = () =>
      panel.evaluate((el) => {
        const w = globalThis as unknown as { innerWidth: number };
        const box = el.getBoundingClientRect();
        const destination = [...el.querySelectorAll("td[data-label='Now to']")][0]!.getBoundingClientRect();
        const overflowing = [...el.querySelectorAll("*")].filter((d) => d.getBoundingClientRect().right > box.right + 0.5).length;
        return {
          scrollsSideways: el.scrollWidth > el.clientWidth,
          destinationInside: destination.left >= box.left && destination.right <= box.right && destination.right <= w.innerWidth,
          overflowing,
          // The panel has the width of the failures' section, not of a table cell (about 180 px on a phone before).
          wideEnough: box.width >= Math.min(w.innerWidth - 60, 600) || `${box.width} of ${w.innerWidth}`,
        };
      });
    const ok = { scrollsSideways: false, destinationInside: true, overflowing: 0, wideEnough: true };
    await panel.getByText(long).first().waitFor();
    expect(await fits()).toEqual(ok);
    await shot("failures-resend");
    await page.setViewportSize({ width: 375, height: 800 });
    try {
      expect(await fits()).toEqual(ok);
    } finally {
      await page.setViewportSize({ width: 1280, height: 900 });
    }

    // The mailbox comes back; the operator resends anyway.
    tidings.smtp.reset();
    await panel.getByLabel(/Reason/).fill("mailbox restored by the customer");
    await panel.getByRole("button", { name: "Execute" }).click();
    // The list reloads; what was done stays on the page, with the focus on it and a link to the story.
    const result = page.locator("#repair-result");
    await result.getByText("Resent by api-key:ops-admin, reason: “mailbox restored by the customer”").waitFor();
    await expect(result.getAttribute("aria-live")).resolves.toBe("polite");
    await page.waitForFunction("document.activeElement?.closest('#repair-result') !== null");
    await expect(result.getByRole("link", { name: `The story of ${id}` }).getAttribute("href")).resolves.toBe(`#/notifications/${id}`);
    await result.locator(`li[data-id="${id}"] [data-outcome="sent"]`, { hasText: "delivered" }).waitFor({ timeout: 20_000 });
    await page.getByText("Nothing is waiting for an operator").waitFor();
    await expect(page.evaluate("document.activeElement?.id")).resolves.toBe("repair-result");
    // A resend is not an archive.
    await page
      .locator("#archived", {
        hasText: /^1 failure was archived by an operator in the last 7 days \(the latest .*\), and 1 was resent to current details \(the latest .*\): they wait for nothing/,
      })
      .waitFor();
  });

  it("shows a reader what it may see, and no repair", async () => {
    const other = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await signIn(other, reader);
    await other.goto(`${api.url}/console/#/failures`);
    await other.getByText("Your key reads only").waitFor();
    await expect(other.getByRole("button", { name: /Re-drive/ }).count()).resolves.toBe(0);
    // Templates: read and previewed, not written.
    await api.call("PUT", "/v1/templates/welcome", { key: admin, body: { email: { subject: "Welcome, {{ entity.name }}", text: "Hello." } } });
    await other.goto(`${api.url}/console/#/templates/welcome`);
    await other.getByText("Your key reads only: a new version needs an admin key.").waitFor();
    await expect(other.getByLabel(/The template as JSON/).count()).resolves.toBe(0);
    await other.close();
  });

  it("lists entities with a filter; clicking one opens it", async () => {
    await page.goto(`${api.url}/console/#/entities`);
    const rows = page.locator("#entities tbody tr");
    await rows.filter({ hasText: "Ada Lovelace" }).waitFor();
    await rows.filter({ hasText: "Bob Builder" }).waitFor();
    await page.getByLabel("Filter (id, name or email)").fill("builder");
    await rows.filter({ hasText: "Ada Lovelace" }).waitFor({ state: "detached" });
    await expect(rows.count()).resolves.toBe(1);
    await rows.getByRole("link", { name: "bob" }).click();
    await page.getByRole("heading", { name: "Entity bob" }).waitFor();
    await page.getByRole("heading", { name: /^Now \(version 1/ }).waitFor();
  });

  it("shows an entity and its history, and edits it", async () => {
    await page.goto(`${api.url}/console/#/entities/ada`);
    await page.getByRole("heading", { name: /^Now \(version 1/ }).waitFor();
    await page.getByText("ada@example.test").first().waitFor();
    await shot("entities");
    // Edited through the same API: a new version, with what changed.
    const editor = page.getByLabel(/The entity as JSON/);
    await editor.fill((await editor.inputValue()).replace("ada@example.test", "ada.lovelace@example.test"));
    await page.getByRole("button", { name: "Save" }).click();
    await page.getByRole("heading", { name: /^Now \(version 2/ }).waitFor();
    await page.getByText("changed: email").waitFor();
  });

  it("lists templates, diffs two versions and previews one live with sample data", async () => {
    const put = async (template: unknown) => {
      const answer = await api.call("PUT", "/v1/templates/report-ready", { key: admin, body: template });
      expect(answer.status).toBeLessThan(300);
    };
    await put({
      description: "A report is ready",
      email: { subject: "Report {{ data.report }} is ready", text: "Hello {{ entity.name }},\nyour report is ready.\nThe reports team" },
    });
    await put({
      description: "A report is ready",
      email: { subject: "Report {{ data.report }} is ready", text: "Hello {{ entity.name }},\nyour report is ready at {{ data.url }}.\nThe reports team" },
      slack: { text: "*{{ data.report }}* is ready: <{{ data.url }}|open it>" },
    });
    await page.goto(`${api.url}/console/#/templates`);
    const row = page.locator("#templates tbody tr", { hasText: "report-ready" });
    await row.getByText("A report is ready").waitFor();
    await expect(row.locator("td").nth(2).textContent()).resolves.toBe("2");
    await row.getByRole("link", { name: "report-ready" }).click();

    await page.getByRole("heading", { name: "Versions (2)" }).waitFor();
    // Version 1 against version 2 (the default pair): the changed line, removed and added; the new Slack field.
    await page.getByLabel("From").selectOption("1");
    await page.getByLabel("To").selectOption("2");
    const text = page.getByRole("region", { name: "email.text: changed" });
    await text.locator("del", { hasText: "your report is ready." }).waitFor();
    await text.locator("ins", { hasText: "your report is ready at {{ data.url }}." }).waitFor();
    await expect(text.locator("del").count()).resolves.toBe(1);
    await page.getByRole("region", { name: "slack.text: added" }).waitFor();
    await page.getByText("Unchanged: description, email.subject").waitFor();
    // The console's line diff itself: kept lines, a removal, an addition at the end; from nothing, all added.
    const diff = (a: string, b: string) =>
      page.evaluate<string[]>(`import("/console/diff.js").then((m) => m.diffLines(${JSON.stringify(a)}, ${JSON.stringify(b)}).map((l) => l.op + " " + l.text))`);
    await expect(diff("a\nb\nc\nd", "a\nc\nd\ne")).resolves.toEqual(["same a", "del b", "same c", "same d", "add e"]);
    await expect(diff("", "x\ny")).resolves.toEqual(["add x", "add y"]);
    await expect(diff("x\ny", "x\ny")).resolves.toEqual(["same x", "same y"]);

    // Live preview: rendered as the operator types, for an entity.
    await page.getByLabel("Entity id (optional)").fill("ada");
    await page.getByLabel("Sample data (JSON object)").fill('{"report": "Q3", "url": "https://reports.example.test/q3"}');
    await page.locator("#preview-subject", { hasText: "Report Q3 is ready" }).waitFor();
    await page.getByRole("article", { name: "Email preview" }).getByText("your report is ready at https://reports.example.test/q3.").waitFor();
    await page.getByRole("article", { name: "Slack preview" }).getByText("*Q3* is ready").waitFor();
    await shot("templates");
    // A missing variable: the problem names it.
    await page.getByLabel("Sample data (JSON object)").fill('{"report": "Q3"}');
    await page.getByRole("alert").filter({ hasText: "cannot be rendered with this data" }).filter({ hasText: "data.url" }).waitFor();
    // Not JSON: said so before any request.
    await page.getByLabel("Sample data (JSON object)").fill('{"report": ');
    await page.getByRole("alert").filter({ hasText: "The sample data is not usable" }).waitFor();
  });

  it("saves a new version of a template from the page (admin)", async () => {
    await page.goto(`${api.url}/console/#/templates/report-ready`);
    const editor = page.getByLabel(/The template as JSON/);
    await editor.waitFor();
    await editor.fill((await editor.inputValue()).replace("The reports team", "The analytics team"));
    await page.getByRole("button", { name: "Save as a new version" }).click();
    await page.getByRole("heading", { name: "Versions (3)" }).waitFor();
    await page.getByText("Version 3 recorded.").waitFor();
    await page.getByRole("region", { name: "email.text: changed" }).locator("ins", { hasText: "The analytics team" }).waitFor();
    // A new key: its first version written from the list page.
    await page.goto(`${api.url}/console/#/templates`);
    await page.getByLabel(/^Key/).fill("password-reset");
    await page.getByRole("button", { name: "Write its first version" }).click();
    await page.getByText("No version yet: write the first one below.").waitFor();
    await page.getByRole("button", { name: "Save as a new version" }).click();
    await page.getByText("Version 1 recorded.").waitFor();
    await page.getByRole("heading", { name: "Versions (1)" }).waitFor();
  });

  it("shows health: workers, queues, lag, failures and stream sizes", async () => {
    await page.goto(`${api.url}/console/#/health`);
    await page.getByRole("heading", { name: /^Workers \(1\)/ }).waitFor();
    await page.getByRole("heading", { name: "Stream sizes" }).waitFor();
    await shot("health");
  });

  it("works with the keyboard alone: sign in with Enter, reach a page with (Shift+)Tab", async () => {
    const kb = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    await kb.goto(`${api.url}/console/`);
    // The key field has the focus on arrival.
    await kb.keyboard.type(admin);
    await kb.keyboard.press("Enter");
    await kb.getByRole("navigation", { name: "Console pages" }).waitFor();
    await kb.getByRole("heading", { name: "Activity" }).waitFor();
    // The page's content has the focus; the navigation is just before it.
    for (let i = 0; i < 10 && (await kb.evaluate<string>("document.activeElement?.textContent ?? ''")) !== "Health"; i++) await kb.keyboard.press("Shift+Tab");
    await kb.keyboard.press("Enter");
    await kb.getByRole("heading", { name: "Health", level: 1 }).waitFor();
    await kb.close();
  });

  it("stays usable at a phone's width (375 px)", async () => {
    // A failed channel's long error and a long subject in the newest row: nothing may push the page wider than the phone.
    tidings.smtp.rejectRecipient("bob@example.test", 550, "5.1.1 <bob@example.test>: Recipient address rejected: User unknown in virtual mailbox table");
    const id = await send("bob", "A-subject-without-any-space-that-is-longer-than-a-phone-screen-is-wide");
    await waitForOutcome(tidings.t, id);
    // Its view may trail the outcome on a busy machine: Activity looks again at a row whose view lags (viewsBehind).
    tidings.smtp.reset();
    // On a laptop first: the status in plain words beside the internal name, and the Outcome column whole.
    await page.goto(`${api.url}/console/#/activity`);
    const laptopRow = page.locator(`#activity tbody tr[data-id="${id}"]`);
    await laptopRow.locator("td[data-label=Outcome]", { hasText: "failed: the address does not exist (550 5.1.1)" }).waitFor();
    await laptopRow.locator("td[data-label=Outcome]", { hasText: "CouldNotSendOnAnyPreparedChannel" }).waitFor();
    await expect(page.evaluate("[...document.querySelectorAll('.table-wrap')].map((t) => t.scrollWidth - t.clientWidth)")).resolves.toEqual([0]);
    await page.goto(`${api.url}/console/#/notifications/${id}`);
    await page.locator("#status", { hasText: "failed: the address does not exist (550 5.1.1)" }).waitFor();
    await page.locator("ol.trail > li", { hasText: "failed: no channel could send it" }).getByText("CouldNotSendOnAnyPreparedChannelEvent").waitFor();
    const phone = await browser.newPage({ viewport: { width: 375, height: 800 }, isMobile: true });
    await signIn(phone, admin);
    await phone.goto(`${api.url}/console/#/activity`);
    await phone.locator(`#activity tbody tr[data-id="${id}"]`).getByText("User unknown").first().waitFor();
    // Neither the page nor the table inside it scrolls sideways (a table that scrolls in its own box hides the end of every row).
    const fits = async (p: Page) =>
      p.evaluate<{ scroll: number; inner: number; tables: number }>(
        "({ scroll: document.scrollingElement.scrollWidth, inner: window.innerWidth, tables: Math.max(0, ...[...document.querySelectorAll('.table-wrap')].map((t) => t.scrollWidth - t.clientWidth)) })",
      );
    expect(await fits(phone)).toEqual({ scroll: 375, inner: 375, tables: 0 });
    for (const [hash, heading] of [
      ["#/failures", "Failures waiting"],
      [`#/notifications/${id}`, "Every record"],
      ["#/templates/report-ready", "Preview"],
    ] as const) {
      await phone.goto(`${api.url}/console/${hash}`);
      await phone.getByRole("heading", { name: heading }).first().waitFor();
      expect({ hash, ...(await fits(phone)) }).toEqual({ hash, scroll: 375, inner: 375, tables: 0 });
    }
    await phone.goto(`${api.url}/console/#/activity`);
    await phone.locator(`#activity tbody tr[data-id="${id}"]`).waitFor();
    await phone.screenshot({ path: path.join(SHOTS, "activity-phone.png"), fullPage: true });
    await phone.close();
  });
});
