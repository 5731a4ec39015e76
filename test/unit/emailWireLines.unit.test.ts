import fc from "fast-check";
import { createEmailTransport, type EmailMessage, type EmailTransport } from "../../src/email/transport";
import { SendNotificationToEntityOp } from "../../src/notification/notification.schemas";
import { startStrictSmtpServer, MAX_LINE_OCTETS, type StrictSmtpServer } from "../helpers/strictSmtpServer";

/**
 * Whatever subject and body the API accepts, the message tidings writes to
 * SMTP has no line over 998 octets (a strict MTA refuses it with 550), and a
 * receiver decodes it back to the subject and body sent. Real nodemailer SMTP
 * transport, real SMTP server on loopback, real MIME parser (mailparser).
 */

const FROM = "tidings <tidings@example.test>";
let server: StrictSmtpServer;
let transport: EmailTransport;

beforeAll(async () => {
  server = await startStrictSmtpServer();
  transport = createEmailTransport({ smtpUrl: server.url, from: FROM, sinkDir: "/nonexistent", maxConnections: 1 });
});
afterAll(async () => {
  await transport.close?.();
  await server.close();
});

let sent = 0;
async function sendAndReceive(subject: string, text: string, html?: string) {
  sent += 1;
  const message: EmailMessage = {
    from: FROM,
    to: ["ada@example.com"],
    subject,
    text,
    ...(html === undefined ? {} : { html }),
    messageId: `<wire-${sent}@example.test>`,
  };
  const before = server.messages.length;
  await transport.send(message);
  expect(server.messages).toHaveLength(before + 1);
  return server.messages[before]!;
}

/**
 * A text as lines, the way email carries it: CR, LF and CRLF are all one
 * line break (text has CRLF line breaks only, RFC 2046 4.1.1), and a body is
 * a sequence of lines each ending in CRLF (RFC 5322 2.1), so "abc" and
 * "abc\n" are the same single-part body on the wire ("abc" CRLF).
 */
const asLines = (text: string) => text.replace(/\r\n?/g, "\n").replace(/\n$/, "");

it("a 998-character subject without a space, as the API accepts it, is taken by a strict server and decodes to itself", async () => {
  const subject = "a".repeat(998);
  expect(SendNotificationToEntityOp.shape.subject.parse(subject)).toBe(subject);
  const received = await sendAndReceive(subject, "body");
  expect(received.longestLine).toBeLessThanOrEqual(MAX_LINE_OCTETS);
  expect(received.subject).toBe(subject);
});

it("a body whose lines end in a lone CR keeps them as line breaks (nodemailer alone dropped the CR and joined the lines)", async () => {
  const received = await sendAndReceive("lone CR", "line1\rline2\r\nline3\nline4");
  expect(asLines(received.text!)).toBe("line1\nline2\nline3\nline4");
});

// --- Random subjects and bodies ---------------------------------------------------

const asciiUnit = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));
/** Characters words are made of: ASCII, Latin, CJK, astral (surrogate pairs), invisible and control, and MIME's own specials. */
const anyUnit = fc.oneof(
  { arbitrary: asciiUnit, weight: 6 },
  { arbitrary: fc.constantFrom("é", "ß", "中", "文", "😀", "𝔘", "👩‍👩‍👧", "\u200b", "\u00a0", "\u0085", "\u2028", "\u0001", "\u007f"), weight: 2 },
  { arbitrary: fc.constantFrom("=", "?", "_", ".", '"', "\\", "=?", "?="), weight: 1 },
);
/** A word of `min` to `max` units without whitespace: a short pattern repeated, so thousands of characters cost little to generate. */
const longWord = (unit: fc.Arbitrary<string>, min: number, max: number) =>
  fc
    .tuple(fc.array(unit, { minLength: 1, maxLength: 6 }), fc.integer({ min, max }))
    .map(([pattern, n]) => Array.from({ length: n }, (_, i) => pattern[i % pattern.length]!).join(""));
const space = fc.constantFrom(" ", "  ", "\t", " \t ", "     ");
/** What readers and MIME treat specially: encoded-word look-alikes, mbox's From_, SMTP's dot, QP's soft break. */
const tricky = fc.constantFrom("=?utf-8?q?hi?=", "=?UTF-8?B?aGk=?=", "From ", ">From ", ".", "..", "-- ", "=20", "=\r\n");

const piece = (unit: fc.Arbitrary<string>, longest: number, breaks: fc.Arbitrary<string> | null) =>
  fc.oneof(
    { arbitrary: fc.string({ unit, minLength: 1, maxLength: 12 }), weight: 6 },
    { arbitrary: space, weight: 4 },
    { arbitrary: longWord(unit, 60, 200), weight: 1 },
    { arbitrary: longWord(unit, 900, longest), weight: 1 },
    { arbitrary: breaks === null ? tricky.filter((t) => !/[\r\n]/.test(t)) : tricky, weight: 1 },
    ...(breaks === null ? [] : [{ arbitrary: breaks, weight: 3 }]),
  );
const lineBreak = fc.constantFrom("\n", "\r\n", "\r", "\n.", "\n..", "\nFrom ", "\n.\n", "\n\n", " \n");
const joined = (p: fc.Arbitrary<string>, maxLength: number) => fc.array(p, { minLength: 1, maxLength }).map((parts) => parts.join(""));

/** Half the subjects are plain ASCII: nodemailer encodes any other subject whole, so only these reach its folding. */
const subject = fc.oneof(joined(piece(asciiUnit, 998, null), 12), joined(piece(anyUnit, 998, null), 12));
const text = joined(piece(anyUnit, 5000, lineBreak), 40);
const html = joined(piece(anyUnit, 5000, lineBreak), 20).map((t) => `<p>${t}</p>`);

/** PostgreSQL cannot store NUL or a lone surrogate; the API refuses them before any schema (test/int/api.fuzz). */
const storable = (s: string) => !/\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s);

/** A client operation the API accepts, as the schema leaves it (the subject trimmed). */
const acceptedOperation = fc
  .record({
    subject,
    text,
    html: fc.option(html, { nil: undefined }),
  })
  .filter(({ subject, text, html }) => storable(subject) && storable(text) && (html === undefined || storable(html)))
  .map(({ subject, text, html }) => SendNotificationToEntityOp.safeParse({ entityId: "ada", subject, text, ...(html === undefined ? {} : { html }) }))
  .filter((parsed) => parsed.success)
  .map((parsed) => parsed.data);

it("random subjects and bodies the API accepts: no line over 998 octets, and each decodes back to what was sent", async () => {
  const before = server.refusals.length;
  let longSubjects = 0;
  await fc.assert(
    fc.asyncProperty(acceptedOperation, async (op) => {
      const received = await sendAndReceive(op.subject, op.text, op.html);
      expect(received.longestLine).toBeLessThanOrEqual(MAX_LINE_OCTETS);
      expect(received.subject).toBe(op.subject);
      expect(asLines(received.text!)).toBe(asLines(op.text));
      if (op.html !== undefined) expect(asLines(received.html!)).toBe(asLines(op.html));
      if (/\S{900}/.test(op.subject)) longSubjects += 1;
    }),
    { seed: 20_260_501, numRuns: 300, endOnFailure: true },
  );
  expect(server.refusals.slice(before)).toEqual([]);
  // The generator reaches the case the issue is about, not only short subjects.
  expect(longSubjects).toBeGreaterThan(10);
}, 120_000);
