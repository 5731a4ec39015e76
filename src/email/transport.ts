import { createHash, randomBytes } from "node:crypto";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { createTransport, type SendMailOptions } from "nodemailer";
import { encodeWord } from "nodemailer/lib/mime-funcs";
import { ExternalError } from "../errors/errors";
import { redactUrl } from "../logging/redact";

/** One message as the email concern sends it: plain text, optional HTML alternative. */
export interface EmailMessage {
  from: string;
  to: string[];
  subject: string;
  text: string;
  html?: string;
  /** `<local@domain>`; stable per operation so a receiver can drop a duplicate. */
  messageId: string;
  headers?: Record<string, string>;
}

export interface EmailSendResult {
  messageId: string;
  /** Recipients the server took. */
  accepted: string[];
  /** Recipients it refused while taking the message for the others. */
  rejected: string[];
  /** The server's final reply (or, for the sink, where the file went). */
  response: string;
}

export interface EmailTransport {
  /** Which transport this is, in words an operator can act on (no credentials). */
  describe(): string;
  /** Send; rejects with the transport's own error (see classifySmtpError). */
  send(message: EmailMessage, signal?: AbortSignal): Promise<EmailSendResult>;
  /**
   * Close pooled connections (call on shutdown, or open sockets keep the
   * process alive); sends after close fail. Optional so a test double can
   * be a plain `{ describe, send }`.
   */
  close?(): Promise<void>;
}

export interface EmailTransportOptions {
  /** `smtp://[user:pass@]host[:port]` or `smtps://...`; without it messages go to the sink directory. */
  smtpUrl?: string;
  /** Default sender when a message has none of its own. */
  from: string;
  /** Where the local sink writes `<message id>.eml` files. */
  sinkDir: string;
  connectionTimeoutMs?: number;
  greetingTimeoutMs?: number;
  socketTimeoutMs?: number;
  /** Pooled connections; at most this many open at once. */
  maxConnections?: number;
}

export function createEmailTransport(options: EmailTransportOptions): EmailTransport {
  return options.smtpUrl ? createSmtpTransport(options.smtpUrl, options) : createSinkTransport(options);
}

/** `smtp://user:secret@host` → `smtp://user:***@host`, for logs and describe() (src/logging/redact.ts). */
export function redactSmtpUrl(url: string): string {
  return redactUrl(url);
}

/*
 * SMTP lines (RFC 5321 4.5.3.1.6, RFC 5322 2.1.1) hold at most 998 octets,
 * and strict servers refuse a message with a longer one (exim: "550 line of
 * 999 octets"). Bodies are safe: nodemailer sends text with a line over 76
 * characters as quoted-printable or base64. Headers are not: nodemailer
 * folds a plain-ASCII subject only at whitespace, so one long word stays one
 * line ("Subject:" + a 998-character word was 999 octets on the wire).
 */

/** A run without whitespace longer than fits "Subject: " + word in RFC 5322's recommended 78 octets. */
const UNFOLDABLE_WORD = /\S{70,}/;
/** Whitespace other than single spaces: readers unfold a folded header by squeezing the run at the fold into one space. */
const SQUEEZABLE_SPACE = /\s\s|[^\S ]/;

/**
 * The subject as nodemailer should write it. A subject with a word too long
 * to fold is sent as RFC 2047 encoded-words of at most 52 characters
 * (nodemailer's own splitting, which keeps UTF-8 sequences whole), which
 * nodemailer passes through and folds between; every reader decodes them
 * back to the same text. So is a subject whose whitespace a reader would
 * change (tabs, runs of spaces: mailparser and mail clients turn a fold and
 * the whitespace after it into one space), and one holding something that
 * reads as an encoded-word (`=?utf-8?q?x?=`), which a reader would decode
 * into other text. Anything else is left to nodemailer, which already
 * encodes non-ASCII and control characters.
 */
export function subjectForWire(subject: string): string {
  if (!UNFOLDABLE_WORD.test(subject) && !SQUEEZABLE_SPACE.test(subject) && !subject.includes("=?")) return subject;
  return encodeWord(subject, /^[\x20-\x7e]*$/.test(subject) ? "Q" : "B", 52);
}

/**
 * Text has CRLF line breaks only (RFC 2046 4.1.1). nodemailer turns LF into
 * CRLF but drops a lone CR ("line1\rline2" arrived as "line1line2"), so every
 * CR, LF or CRLF is made a line break first.
 */
export function lineBreaks(text: string): string {
  return text.replace(/\r\n?/g, "\n");
}

/** The nodemailer message for ours: the same for SMTP and for the sink, so the sink shows what SMTP carries. */
function mailOptions(message: EmailMessage, signal: AbortSignal | undefined): SendMailOptions {
  return {
    from: message.from,
    to: message.to,
    subject: subjectForWire(message.subject),
    text: lineBreaks(message.text),
    ...(message.html === undefined ? {} : { html: lineBreaks(message.html) }),
    messageId: message.messageId,
    ...(message.headers ? { headers: message.headers } : {}),
    ...(signal ? { signal } : {}),
  };
}

function addressList(list: unknown): string[] {
  if (!Array.isArray(list)) return [];
  return list.map((a) => (typeof a === "string" ? a : String((a as { address?: unknown })?.address ?? a)));
}

function createSmtpTransport(smtpUrl: string, options: EmailTransportOptions): EmailTransport {
  const mailer = createTransport(
    {
      url: smtpUrl,
      // Reuse connections between sends; one SMTP handshake per message is
      // most of the cost of a send.
      pool: true,
      maxConnections: options.maxConnections ?? 5,
      // The pool would otherwise quietly resend a message whose connection
      // dropped mid-send, up to 5 times: retries belong to the runner, where
      // each attempt is counted and kept in the handling history.
      maxRequeues: 0,
      // Bounded waits: a stuck server must become a (transient) failure, not
      // a job that hangs until the worker's lease runs out.
      connectionTimeout: options.connectionTimeoutMs ?? 10_000,
      greetingTimeout: options.greetingTimeoutMs ?? options.connectionTimeoutMs ?? 10_000,
      socketTimeout: options.socketTimeoutMs ?? 30_000,
      dnsTimeout: options.connectionTimeoutMs ?? 10_000,
    },
    { from: options.from },
  );
  const description = `SMTP server ${redactSmtpUrl(smtpUrl)} (pooled, at most ${options.maxConnections ?? 5} connections)`;
  return {
    describe: () => description,
    async send(message, signal) {
      const info = await mailer.sendMail(mailOptions(message, signal));
      return {
        messageId: info.messageId,
        accepted: addressList(info.accepted),
        rejected: addressList(info.rejected),
        response: String(info.response ?? ""),
      };
    },
    async close() {
      mailer.close();
    },
  };
}

/**
 * A file name for a message id: readable when the id is already safe,
 * otherwise sanitised and suffixed with a hash of the original so two ids
 * never share a file. Never contains a path separator or starts with a dot.
 */
export function sinkFileName(messageId: string): string {
  const bare = messageId.replace(/^<|>$/g, "");
  let safe = bare.replace(/[^A-Za-z0-9._@+=-]/g, "_").replace(/^\.+/, "_");
  if (safe !== bare || safe.length > 150 || safe.length === 0) {
    const hash = createHash("sha256").update(messageId).digest("hex").slice(0, 16);
    safe = `${safe.slice(0, 150)}-${hash}`;
  }
  return `${safe}.eml`;
}

function createSinkTransport(options: EmailTransportOptions): EmailTransport {
  const dir = path.resolve(options.sinkDir);
  // Composes exactly what SMTP would carry (headers, MIME parts, encodings),
  // with CRLF line ends as on the wire, so the .eml opens in any mail client.
  const composer = createTransport({ streamTransport: true, buffer: true, newline: "windows" }, { from: options.from });
  let closed = false;
  return {
    describe: () => `local sink: no SMTP URL configured, messages are written as .eml files to ${dir}`,
    async send(message, signal) {
      if (closed) throw new Error("the email sink transport is closed");
      const info = await composer.sendMail(mailOptions(message, signal));
      signal?.throwIfAborted();
      await mkdir(dir, { recursive: true });
      const file = path.join(dir, sinkFileName(message.messageId));
      // Write then rename: a reader never sees half a message, and a resend
      // of the same message id replaces the file instead of adding one.
      const temp = path.join(dir, `.${randomBytes(6).toString("hex")}.tmp`);
      try {
        await writeFile(temp, info.message as Buffer);
        await rename(temp, file);
      } catch (error) {
        await rm(temp, { force: true });
        throw error;
      }
      return {
        messageId: info.messageId,
        accepted: addressList(info.envelope.to),
        rejected: [],
        response: `written to ${file}`,
      };
    },
    async close() {
      closed = true;
    },
  };
}

// ---------------------------------------------------------------------------
// Classification of SMTP failures.
// ---------------------------------------------------------------------------

/*
 * A failure without an SMTP reply is transient unless its code is in
 * PERMANENT_CODES: ECONNECTION (connection closed unexpectedly), ETIMEDOUT,
 * ESOCKET (refused, reset), EDNS, ETLS (a handshake cut short; a bad
 * certificate ends as "attempts exhausted" with the reason kept), EPROXY,
 * EPROTOCOL (a reply cut mid-line), EABORT (our own shutdown interrupted the
 * send), EOAUTH2 (token endpoint unreachable), Node's raw ECONNREFUSED,
 * ECONNRESET, ENOTFOUND, EAI_AGAIN..., and anything unknown.
 */

/** Codes that will fail again with the same message and configuration, whatever the network does. */
const PERMANENT_CODES = new Set([
  "EAUTH",
  "ENOAUTH",
  "EENVELOPE", // without a reply code: refused before sending (invalid address, no recipients)
  "EMESSAGE",
  "EMAXRECIPIENTS",
  "ESTREAM",
  "ECONFIG",
  "EREQUIRETLS",
  "EFILEACCESS",
  "EURLACCESS",
  "ERR_ACCESS_DENIED",
]);

interface NodemailerLikeError {
  message?: unknown;
  code?: unknown;
  responseCode?: unknown;
  response?: unknown;
  command?: unknown;
  originalCode?: unknown;
  rejected?: unknown;
  timeoutType?: unknown;
}

function str(value: unknown): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

/**
 * Turn whatever nodemailer threw into an ExternalError the runner can act
 * on. The SMTP reply code decides when there is one (RFC 5321: 4yz
 * transient, 5yz permanent); otherwise nodemailer's error code does. An
 * unknown error is transient: a bounded number of retries costs little,
 * giving up on a message over an error nobody understood costs the message.
 */
export function classifySmtpError(error: unknown): ExternalError {
  if (error instanceof ExternalError) return error;
  const e = (typeof error === "object" && error !== null ? error : {}) as NodemailerLikeError;
  const code = str(e.code);
  const smtpCode = typeof e.responseCode === "number" && Number.isInteger(e.responseCode) && e.responseCode >= 200 && e.responseCode < 600 ? e.responseCode : null;
  const message = str(e.message) ?? (typeof error === "string" ? error : `unknown email transport error: ${String(error)}`);

  let transient: boolean;
  if (smtpCode !== null && smtpCode >= 500) {
    // 503 "bad sequence of commands" is the one 5yz about the session, not
    // the message: the same message can pass on a fresh connection.
    transient = smtpCode === 503;
  } else if (smtpCode !== null) {
    // 4yz: try later (greylisting, mailbox busy, 421 closing). An unexpected
    // 2yz/3yz is a confused exchange, not a verdict on the message.
    transient = true;
  } else {
    transient = code === null || !PERMANENT_CODES.has(code);
  }

  const details: Record<string, unknown> = {
    smtpCode,
    code,
    classification: transient ? "transient" : "permanent",
  };
  const command = str(e.command);
  if (command) details.command = command;
  const response = str(e.response);
  if (response) details.response = response;
  const originalCode = str(e.originalCode);
  if (originalCode) details.originalCode = originalCode;
  const timeoutType = str(e.timeoutType);
  if (timeoutType) details.timeoutType = timeoutType;
  if (Array.isArray(e.rejected)) details.rejected = e.rejected.map(String);
  return new ExternalError(message, transient, details, undefined, { cause: error });
}
