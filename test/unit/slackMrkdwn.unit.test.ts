import fc from "fast-check";
import { composeSlackParts } from "../../src/slack/compose";
import { buildPostMessageArgs, sanitizeSlackMrkdwn, type SlackBlock } from "../../src/slack/format";
import { disguisedLink, markdownToMrkdwn } from "../../src/slack/mrkdwn";

/** What Slack would read as a control sequence or entity once web/mail links and blockquote markers are set aside. */
const LINK = /<(?:https?:\/\/|mailto:)[^\s<>|]+(?:\|[^<>]*)?>/gi;
const controlSequences = (mrkdwn: string) =>
  mrkdwn
    .replace(LINK, "")
    .replace(/^>/gm, "")
    .match(/[<>]|&(?!amp;|lt;|gt;)/g) ?? [];
/** Every `<url|label>` in a body, with its label. */
const labelledLinks = (mrkdwn: string) => [...mrkdwn.matchAll(/<((?:https?:\/\/|mailto:)[^\s<>|]+)\|([^<>]*)>/gi)].map((m) => ({ url: m[1]!, label: m[2]! }));

describe("markdownToMrkdwn: Markdown becomes mrkdwn", () => {
  it.each([
    ["bold, italic, strike", "**bold** __bold__ *it* _it_ ~~gone~~", "*bold* *bold* _it_ _it_ ~gone~"],
    ["headings become bold lines", "# Title\n## Sub *x* **y**", "*Title*\n\n*Sub _x_ y*"],
    ["bullet and numbered lists, nested", "- a\n- b\n  - inner\n\n3. three\n4. four", "• a\n• b\n    • inner\n\n3. three\n4. four"],
    ["code spans and blocks keep their content, escaped", "`a <b> & *c*`\n\n```js\nif (a < b && c) {}\n```", "`a &lt;b&gt; &amp; *c*`\n\n```\nif (a &lt; b &amp;&amp; c) {}\n```"],
    [
      "links and autolinks",
      "[the docs](https://docs.example/a?b=1&c=2) <https://auto.example> https://bare.example/x",
      "<https://docs.example/a?b=1&amp;c=2|the docs> <https://auto.example> <https://bare.example/x>",
    ],
    ["mail links", "[write to us](mailto:ops@example.com) <ops@example.com>", "<mailto:ops@example.com|write to us> <mailto:ops@example.com>"],
    ["images become links to the image", "![build graph](https://ci.example/graph.png)", "<https://ci.example/graph.png|build graph>"],
    ["block quotes", "> quoted\n> more\n\nafter", "> quoted\n> more\n\nafter"],
    ["hard breaks are line breaks, not backslashes", "one  \ntwo\\\nthree", "one\ntwo\nthree"],
    ["tables become a code block", "| a | b |\n|---|---|\n| 1 | 2 |", "```\n| a | b |\n| 1 | 2 |\n```"],
  ])("%s", (_what, markdown, expected) => {
    expect(markdownToMrkdwn(markdown)).toBe(expected);
  });
});

describe("markdownToMrkdwn: what the author typed cannot become a mention, an entity or formatting", () => {
  it("mentions and HTML show as typed", () => {
    expect(markdownToMrkdwn("<!here> <!channel> <@U0123> <#C0123|general> <b>bold</b> <script>x</script>")).toBe(
      "&lt;!here&gt; &lt;!channel&gt; &lt;@U0123&gt; &lt;#C0123|general&gt; &lt;b&gt;bold&lt;/b&gt; &lt;script&gt;x&lt;/script&gt;",
    );
  });

  it("& shows as typed, entities the author wrote show as the character they name", () => {
    expect(markdownToMrkdwn("R&D &amp; ops &lt;3")).toBe("R&amp;D &amp; ops &lt;3");
  });

  it("a mention inside a link label is text", () => {
    expect(markdownToMrkdwn("[<!here> now](https://x.example)")).toBe("<https://x.example|&lt;!here&gt; now>");
  });

  it("formatting characters meant literally do not format (look-alikes), inside words they stay", () => {
    expect(markdownToMrkdwn("\\*not bold\\* \\_not it\\_ \\~no\\~ \\`no\\` 2 * 3 snake_case :white_check_mark:")).toBe(
      "\u2217not bold\u2217 \u02cdnot it\u02cd \u223cno\u223c \u02cbno\u02cb 2 \u2217 3 snake_case :white_check_mark:",
    );
  });

  it("an escaped > opening a line is not a block quote", () => {
    expect(markdownToMrkdwn("\\> not a quote")).toBe("\u00ad&gt; not a quote");
  });

  it("links to anything but http(s) and mailto are not links", () => {
    expect(markdownToMrkdwn("[runbook](/runbook) [x](ftp://files.example/a)")).toBe("runbook (/runbook) x (ftp://files.example/a)");
    // markdown-it refuses javascript: targets: the text stays as typed.
    expect(markdownToMrkdwn("[click](javascript:alert(1))")).toBe("[click](javascript:alert(1))");
  });

  // How fast is measured by hand (docs/workflow.md), not here: a timed test fails on a busy machine.
  it("100 kB of Markdown converts whole, escaped throughout (property of the output)", () => {
    const part = (i: number) => `## Part ${i} <!here>\n\nSome **bold** & [a link](https://x.example/${i}) and \`code\`.\n\n- item *${i}*\n`;
    const markdown = Array.from({ length: 1200 }, (_, i) => part(i))
      .join("\n")
      .slice(0, 100_000);
    const mrkdwn = markdownToMrkdwn(markdown);
    const last = [...markdown.matchAll(/^## Part (\d+)/gm)].at(-1)![1];
    expect(mrkdwn).toContain(`*Part ${last} &lt;!here&gt;*`);
    expect(controlSequences(mrkdwn)).toEqual([]);
  });

  it("never leaves a control sequence but a web or mail link, and never a disguised link (property)", () => {
    const piece = fc.constantFrom(
      "<",
      ">",
      "&",
      "*",
      "_",
      "~",
      "`",
      "[",
      "]",
      "(",
      ")",
      "!",
      "|",
      "\\",
      "\n",
      " ",
      "#",
      "-",
      "1.",
      "amp;",
      "lt;",
      "<!here>",
      "<@U1>",
      "https://bank.example",
      "bank.example",
      "www.bank.example/login",
      "https://evil.example",
      "mailto:a@b.example",
      "a@b.example",
      "x",
    );
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 40 }).map((a) => a.join("")),
        (markdown) => {
          const mrkdwn = markdownToMrkdwn(markdown);
          if (controlSequences(mrkdwn).length > 0) return false;
          return labelledLinks(mrkdwn).every(({ url, label }) => !disguisedLink(label.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&"), url));
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe("disguised links show their real target", () => {
  it.each([
    ["[https://bank.example](https://evil.example)", "https://bank.example (<https://evil.example>)"],
    ["[bank.example](https://evil.example)", "bank.example (<https://evil.example>)"],
    ["[www.bank.example/login](https://evil.example)", "www.bank.example/login (<https://evil.example>)"],
    ["[Log in at BANK.example now](https://evil.example/login)", "Log in at BANK.example now (<https://evil.example/login>)"],
    ["[support@bank.example](mailto:thief@evil.example)", "support@bank.example (<mailto:thief@evil.example>)"],
    ["![https://bank.example/logo.png](https://evil.example/x.png)", "https://bank.example/logo.png (<https://evil.example/x.png>)"],
  ])("%s", (markdown, expected) => {
    expect(markdownToMrkdwn(markdown)).toBe(expected);
  });

  it.each([
    ["[https://bank.example](https://bank.example/)", "<https://bank.example/|https://bank.example>"],
    ["[www.bank.example/login](https://bank.example/login)", "<https://bank.example/login|www.bank.example/login>"],
    ["[the docs](https://docs.example)", "<https://docs.example|the docs>"],
    ["[ops@example.com](mailto:ops@example.com)", "<mailto:ops@example.com|ops@example.com>"],
  ])("a label naming its own target stays a link: %s", (markdown, expected) => {
    expect(markdownToMrkdwn(markdown)).toBe(expected);
  });

  it("sanitizeSlackMrkdwn does the same for <url|label> sequences in any body", () => {
    expect(sanitizeSlackMrkdwn("<https://evil.example|https://bank.example> <https://evil.example|bank.example> <https://evil.example|www.bank.example/login>")).toBe(
      "https://bank.example (<https://evil.example>) bank.example (<https://evil.example>) www.bank.example/login (<https://evil.example>)",
    );
    expect(sanitizeSlackMrkdwn("<https://bank.example/a|bank.example> <https://x.example/?a=1&b=2|x & y>")).toBe(
      "<https://bank.example/a|bank.example> <https://x.example/?a=1&amp;b=2|x &amp; y>",
    );
  });
});

describe("the subject of a Slack notification", () => {
  const subject = "Deploy *done* _now_ ~maybe~ `v2` <!channel> & co";

  it("shows exactly as typed: a plain_text header, nothing escaped or formatted in it", () => {
    const parts = composeSlackParts({ subject, text: "Body text", markdown: "**Shipped** to prod." });
    const args = buildPostMessageArgs({ channel: "#deploys", ...parts });
    expect(args.blocks).toEqual([
      { type: "header", text: { type: "plain_text", text: subject } },
      { type: "section", text: { type: "mrkdwn", text: "*Shipped* to prod." } },
    ]);
    // The notification fallback: escaped so <!channel> cannot ping, mrkdwn off so * and _ do not format.
    expect(args.text).toBe("Deploy *done* _now_ ~maybe~ `v2` &lt;!channel&gt; &amp; co\n\nBody text");
    expect(args.mrkdwn).toBe(false);
    // The old composition put it in the mrkdwn body as *subject*, where its own * closed the bold.
    expect(JSON.stringify(args.blocks)).not.toContain("*Deploy");
  });

  it("longer than a header allows: a plain_text section", () => {
    const long = `${"x".repeat(200)} *y*`;
    const args = buildPostMessageArgs({ channel: "#deploys", ...composeSlackParts({ subject: long, text: "t", markdown: "m" }) });
    expect(args.blocks![0]).toEqual({ type: "section", text: { type: "plain_text", text: long } });
  });

  it("without Markdown: one plain text message, mrkdwn off, escaped", () => {
    const args = buildPostMessageArgs({ channel: "#deploys", ...composeSlackParts({ subject, text: "Body" }) });
    expect(args).toEqual({ channel: "#deploys", text: "Deploy *done* _now_ ~maybe~ `v2` &lt;!channel&gt; &amp; co\n\nBody", mrkdwn: false, link_names: false });
  });

  it("a body longer than Slack takes is cut with a note, and spread over section blocks", () => {
    const parts = composeSlackParts({ subject: "Big", text: "x".repeat(100_000), markdown: "para\n\n".repeat(20_000) });
    expect(parts.text).toHaveLength(40_000);
    expect(parts.text.endsWith("… (truncated)")).toBe(true);
    expect(parts.mrkdwn!.length).toBeLessThanOrEqual(40_000);
    const args = buildPostMessageArgs({ channel: "#big", ...parts });
    expect(args.blocks!.length).toBeLessThanOrEqual(50);
    for (const block of args.blocks!.slice(1) as SlackBlock[]) expect(block.text.text.length).toBeLessThanOrEqual(3000);
  });
});

describe("message metadata", () => {
  it("every post with an operation id carries it (and the attempt) as tidings_message metadata", () => {
    expect(buildPostMessageArgs({ channel: "#ops", text: "hi", operationId: "ntf-1:slack", attempt: 2 }).metadata).toEqual({
      event_type: "tidings_message",
      event_payload: { operation_id: "ntf-1:slack", attempt: 2 },
    });
    expect(buildPostMessageArgs({ channel: "#ops", text: "hi", mrkdwn: "*x*", subject: "s", operationId: "op" }).metadata).toEqual({
      event_type: "tidings_message",
      event_payload: { operation_id: "op" },
    });
  });
});
