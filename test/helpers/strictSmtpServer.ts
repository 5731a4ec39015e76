import type { AddressInfo } from "node:net";
import { simpleParser } from "mailparser";
import { SMTPServer } from "smtp-server";

/**
 * An SMTP server on 127.0.0.1 as strict about line lengths as exim or
 * Postfix with strict settings: a message with a line over 998 octets
 * (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1; the CRLF not counted) or a bare CR
 * or LF (RFC 5321 2.3.8) is refused with 550 at the end of DATA, as exim
 * does ("550 line of 999 octets"). Accepted messages are decoded with
 * mailparser, a full MIME parser independent of nodemailer's composer, so a
 * test can check what a receiving mail client would show.
 */

export const MAX_LINE_OCTETS = 998;

export interface StrictMessage {
  /** Envelope recipients (RCPT TO). */
  to: string[];
  /** The message as received: dot-unstuffed, CRLF line ends, still encoded. */
  raw: Buffer;
  /** Length in octets of its longest line, CRLF not counted. */
  longestLine: number;
  /** Decoded by mailparser. */
  subject: string | undefined;
  text: string | undefined;
  html: string | undefined;
  messageId: string | undefined;
  from: string | undefined;
}

export interface Refusal {
  reason: string;
  raw: Buffer;
}

export interface StrictSmtpServer {
  url: string;
  readonly messages: StrictMessage[];
  readonly refusals: Refusal[];
  close(): Promise<void>;
}

/** Its longest line (octets, CRLF not counted), and the first thing a strict MTA would refuse it for, or null. */
export function scanLines(raw: Buffer): { longestLine: number; problem: string | null } {
  let longestLine = 0;
  let problem: string | null = null;
  let start = 0;
  for (let i = 0; i <= raw.length; i++) {
    const byte = raw[i];
    if (i < raw.length && byte === 0x0d && raw[i + 1] !== 0x0a) problem ??= `bare CR at octet ${i}`;
    if (i < raw.length && byte === 0x0a && raw[i - 1] !== 0x0d) problem ??= `bare LF at octet ${i}`;
    if (i === raw.length || byte === 0x0a) {
      const length = (i === raw.length ? i : i - 1) - start;
      longestLine = Math.max(longestLine, length);
      if (length > MAX_LINE_OCTETS) problem ??= `line of ${length} octets`;
      start = i + 1;
    }
  }
  return { longestLine, problem };
}

function refusal(message: string): Error {
  return Object.assign(new Error(message), { responseCode: 550 });
}

export async function startStrictSmtpServer(): Promise<StrictSmtpServer> {
  const messages: StrictMessage[] = [];
  const refusals: Refusal[] = [];
  const server = new SMTPServer({
    authOptional: true,
    disabledCommands: ["STARTTLS"],
    logger: false,
    // Far above anything tidings sends; the point is the line length, not the size.
    size: 50 * 1024 * 1024,
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("error", (error) => callback(error));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks);
        const { longestLine, problem } = scanLines(raw);
        if (problem) {
          refusals.push({ reason: problem, raw });
          callback(refusal(`5.6.0 ${problem}`));
          return;
        }
        simpleParser(raw, { skipTextToHtml: true, skipHtmlToText: true, skipImageLinks: true }).then(
          (parsed) => {
            messages.push({
              to: session.envelope.rcptTo.map((r) => r.address),
              raw,
              longestLine,
              subject: parsed.subject,
              text: parsed.text,
              html: typeof parsed.html === "string" ? parsed.html : undefined,
              messageId: parsed.messageId,
              from: parsed.from?.text,
            });
            callback(null, "2.0.0 accepted");
          },
          (error: Error) => callback(refusal(`5.6.0 unparseable message: ${error.message}`)),
        );
      });
    },
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.server.address() as AddressInfo;
  return {
    url: `smtp://127.0.0.1:${port}`,
    messages,
    refusals,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
