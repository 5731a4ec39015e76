import fc from "fast-check";
import { SECTION_TEXT_LIMIT, buildPostMessageArgs, escapeSlackText, sanitizeSlackMrkdwn } from "../../src/slack/format";

const unescape = (s: string) => s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
/** Slack reads `<` as the start of a control sequence and `&` as the start of an entity. */
const noControlSequence = (s: string) => !/[<>]/.test(s) && !/&(?!amp;|lt;|gt;)/.test(s);

describe("escapeSlackText", () => {
  it("escapes &, < and > as Slack asks", () => {
    expect(escapeSlackText("a & b < c > d")).toBe("a &amp; b &lt; c &gt; d");
  });

  it("neutralises mentions and links", () => {
    expect(escapeSlackText("<!channel> hi <@U0123> see <https://evil.example|bank>")).toBe("&lt;!channel&gt; hi &lt;@U0123&gt; see &lt;https://evil.example|bank&gt;");
  });

  it("escapes an already-escaped entity again: plain text shows exactly what was typed", () => {
    expect(escapeSlackText("&amp;")).toBe("&amp;amp;");
  });

  it("leaves everything else alone", () => {
    expect(escapeSlackText("*bold* _it_ `code` @here #general ünïcødé 🎉")).toBe("*bold* _it_ `code` @here #general ünïcødé 🎉");
  });

  it("round-trips and never leaves a control sequence (property)", () => {
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom("<", ">", "&", "a", "!", "@", ";", "l", "t", "g", "m", "p", " ") }), (s) => {
        const escaped = escapeSlackText(s);
        return unescape(escaped) === s && noControlSequence(escaped);
      }),
    );
  });
});

describe("sanitizeSlackMrkdwn", () => {
  it("keeps web and mail links", () => {
    const body = "see <https://example.com/a?b=1|the docs> or <mailto:ops@example.com> or <http://x.example>";
    expect(sanitizeSlackMrkdwn(body)).toBe(body);
  });

  it("escapes mentions, channel links, user-group and date sequences", () => {
    expect(sanitizeSlackMrkdwn("<!here> <!channel> <@U0123> <#C0123|general> <!subteam^S01> <!date^1392734382^{date}|x>")).toBe(
      "&lt;!here&gt; &lt;!channel&gt; &lt;@U0123&gt; &lt;#C0123|general&gt; &lt;!subteam^S01&gt; &lt;!date^1392734382^{date}|x&gt;",
    );
  });

  it("escapes links with other schemes", () => {
    expect(sanitizeSlackMrkdwn("<javascript:alert(1)|click>")).toBe("&lt;javascript:alert(1)|click&gt;");
  });

  it("keeps entities the producer escaped and escapes stray & < >", () => {
    expect(sanitizeSlackMrkdwn("a &amp; b & c &lt;x&gt; 1 < 2 > 0 &nbsp;")).toBe("a &amp; b &amp; c &lt;x&gt; 1 &lt; 2 &gt; 0 &amp;nbsp;");
  });

  it("cannot smuggle a mention inside a link label", () => {
    expect(sanitizeSlackMrkdwn("<https://example.com|a & b>")).toBe("<https://example.com|a &amp; b>");
    expect(sanitizeSlackMrkdwn("<https://example.com|<!here>>")).toBe("&lt;https://example.com|&lt;!here&gt;&gt;");
  });

  it("keeps mrkdwn formatting, blockquotes included", () => {
    expect(sanitizeSlackMrkdwn("> quote\n*bold* _it_ ~strike~ `code`\n> quote > not a marker")).toBe("> quote\n*bold* _it_ ~strike~ `code`\n> quote &gt; not a marker");
  });

  it("is idempotent and leaves no sequence but a web or mail link (property)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom("<", ">", "&", "amp;", "lt;", "!here", "@U1", "https://x.io", "mailto:a@b.c", "|", "t", " ", "*", "\n")).map((a) => a.join("")),
        (s) => {
          const once = sanitizeSlackMrkdwn(s);
          const withoutLinks = once.replace(/<(?:https?:\/\/|mailto:)[^\s<>|]+(?:\|[^<>]*)?>/gi, "").replace(/^>/gm, "");
          return sanitizeSlackMrkdwn(once) === once && noControlSequence(withoutLinks);
        },
      ),
    );
  });
});

describe("buildPostMessageArgs", () => {
  it("plain text: escaped, mrkdwn off, no mention linking", () => {
    expect(buildPostMessageArgs({ channel: "#ops", text: "disk <90% & *rising*" })).toEqual({
      channel: "#ops",
      text: "disk &lt;90% &amp; *rising*",
      mrkdwn: false,
      link_names: false,
    });
  });

  it("with mrkdwn: the body in a mrkdwn section block, the escaped text as the notification fallback", () => {
    const args = buildPostMessageArgs({ channel: "C0123ABC", text: "Deploy <done>", mrkdwn: "*Deploy* done <!here>" });
    expect(args).toEqual({
      channel: "C0123ABC",
      text: "Deploy &lt;done&gt;",
      // The fallback is plain text: never formatted (it was formatted as mrkdwn before).
      mrkdwn: false,
      link_names: false,
      blocks: [{ type: "section", text: { type: "mrkdwn", text: "*Deploy* done &lt;!here&gt;" } }],
    });
  });

  it("a blank mrkdwn body is ignored", () => {
    expect(buildPostMessageArgs({ channel: "#ops", text: "hi", mrkdwn: "  " }).blocks).toBeUndefined();
  });

  it("a body too long for a section block becomes the mrkdwn text itself", () => {
    const long = "x".repeat(SECTION_TEXT_LIMIT + 1);
    expect(buildPostMessageArgs({ channel: "#ops", text: "short", mrkdwn: long })).toEqual({
      channel: "#ops",
      text: long,
      mrkdwn: true,
      link_names: false,
    });
  });
});

describe("buildPostMessageArgs with a template's Block Kit blocks", () => {
  const blocks = [
    { type: "header", text: { type: "plain_text", text: "<!here> stays text" } },
    { type: "section", text: { type: "mrkdwn", text: "hi <!channel> <https://x.example|x>" }, fields: [{ type: "mrkdwn", text: "a & b" }] },
    {
      type: "context",
      elements: [
        { type: "mrkdwn", text: "<@U123>" },
        { type: "image", image_url: "https://x.example/a.png", alt_text: "<a>" },
      ],
    },
  ];

  it("posts the blocks with every mrkdwn text sanitised and plain text untouched, the mrkdwn body as the fallback", () => {
    const args = buildPostMessageArgs({ channel: "#c", text: "Subject\n\nplain <b>", mrkdwn: "*body* <!here>", blocks });
    expect(args).toMatchObject({ text: "*body* &lt;!here&gt;", mrkdwn: true });
    expect(args.blocks).toEqual([
      blocks[0],
      { type: "section", text: { type: "mrkdwn", text: "hi &lt;!channel&gt; <https://x.example|x>" }, fields: [{ type: "mrkdwn", text: "a &amp; b" }] },
      {
        type: "context",
        elements: [
          { type: "mrkdwn", text: "&lt;@U123&gt;" },
          { type: "image", image_url: "https://x.example/a.png", alt_text: "<a>" },
        ],
      },
    ]);
  });

  it("without a mrkdwn body, the escaped plain text is the fallback", () => {
    expect(buildPostMessageArgs({ channel: "#c", text: "plain <b>", blocks })).toMatchObject({ text: "plain &lt;b&gt;", mrkdwn: false, blocks: expect.any(Array) });
  });
});
