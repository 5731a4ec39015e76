import type net from "node:net";
import { SMTPServer, type SMTPServerSession } from "smtp-server";
import { ReplyHolder, type HoldOptions, type ReplyHold } from "./replyHold";

/**
 * A real SMTP server on 127.0.0.1 for tests: records what it receives and
 * can be told to misbehave (reject, drop, delay) in the ways real servers do.
 *
 * Faults are counted per mail transaction (one MAIL FROM .. DATA), not per
 * connection: a pooled client sends many messages over one connection, and
 * "the next 2 messages fail" is what a test means. CONNECT faults are the
 * exception and count connections.
 *
 * `holdReplies` puts a send in flight by construction: the server takes the
 * whole message and keeps its reply until the test releases it, so a test
 * can crash the client while it waits instead of hoping a latency is long
 * enough.
 */

export type SmtpStage = "CONNECT" | "MAIL" | "RCPT" | "DATA";

export type SmtpFault =
  /** Reply `code` (4xx transient, 5xx permanent). At RCPT every recipient of the transaction is refused. */
  | { action: "reject"; stage: SmtpStage; code: number; message?: string }
  /** Cut the TCP connection; at DATA, after the first chunk of the message arrived. */
  | { action: "drop"; stage: SmtpStage }
  /** Wait before answering (then accept); at CONNECT this delays the greeting. */
  | { action: "delay"; stage: SmtpStage; ms: number };

export interface ReceivedMessage {
  sessionId: string;
  from: string;
  to: string[];
  /** The message exactly as received (CRLF line ends, still encoded). */
  raw: string;
  /** Decoded headers, lower-case names; repeated headers keep the last value. */
  headers: Record<string, string>;
  messageId: string | null;
  subject: string | null;
  text: string | null;
  html: string | null;
  receivedAt: Date;
}

/** One mail transaction (MAIL FROM onwards) and how it ended. */
export interface SmtpTransaction {
  sessionId: string;
  from: string;
  /** Recipients accepted at RCPT TO. */
  to: string[];
  /** Recipients refused at RCPT TO. */
  refused: string[];
  /** "open": never finished (e.g. every recipient refused, then RSET or QUIT). */
  outcome: "open" | "accepted" | "rejected" | "dropped";
  /** Where a rejection or drop happened. */
  stage: SmtpStage | null;
  /** The reply code that ended it (0 when dropped or open). */
  code: number;
  messageId: string | null;
}

export interface TestSmtpServer {
  url: string;
  port: number;
  /** Accepted messages, in arrival order. */
  readonly messages: ReceivedMessage[];
  /** Every transaction that got as far as MAIL FROM, whatever its outcome. */
  readonly transactions: SmtpTransaction[];
  /** Connections opened so far. */
  readonly connections: number;
  /** The next `count` transactions (connections for CONNECT faults) meet this fault. */
  faultNext(count: number, fault: SmtpFault): void;
  rejectNext(count: number, stage: SmtpStage, code: number, message?: string): void;
  dropNext(count: number, stage?: SmtpStage): void;
  /**
   * Every transaction (or connection) meets the fault with this probability,
   * deterministically: with a seed, from a seeded generator; without, exactly
   * every 1/fraction-th one (floor(n·fraction) faults in the first n).
   */
  faultFraction(fraction: number, fault: SmtpFault, options?: { seed?: number }): void;
  /** Refuse this recipient at RCPT TO, for every transaction. */
  rejectRecipient(address: string, code: number, message?: string): void;
  /** Answer every accepted DATA after this many ms (server latency). */
  setLatency(ms: number): void;
  /**
   * From now on, answer the next `after` transactions that reach the end of
   * DATA as usual, then hold the reply of the following `count` (default: all)
   * until the hold is released (250, and the message counts as received even
   * if its client went away: a server that had queued it when its reply was
   * lost) or aborted (connection cut, nothing kept). Transactions that meet a
   * fault are not held.
   */
  holdReplies(options?: HoldOptions): ReplyHold<SmtpTransaction>;
  /** Client connections open now: 0 once every connection of a dead client has closed, so nothing more can arrive from it. */
  openConnections(): Promise<number>;
  /** Forget faults, latency and recordings. */
  reset(): void;
  waitForMessages(count: number, timeoutMs?: number): Promise<ReceivedMessage[]>;
  /** Stop listening and cut every open connection now. */
  close(): Promise<void>;
}

interface CountedFault {
  remaining: number;
  fault: SmtpFault;
}

interface FractionRule {
  fraction: number;
  fault: SmtpFault;
  next: () => boolean;
}

/** mulberry32: a tiny seeded generator, good enough to spread faults reproducibly. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function smtpError(code: number, message: string): Error & { responseCode: number } {
  return Object.assign(new Error(message), { responseCode: code });
}

function defaultMessage(code: number): string {
  return code >= 500 ? "5.7.1 Rejected by test server" : "4.3.0 Try again later (test server)";
}

export interface SmtpServerOptions {
  /** Require AUTH with these credentials (535 otherwise); without it AUTH is optional and any login passes. */
  auth?: { user: string; pass: string };
}

export async function startSmtpServer(options: SmtpServerOptions = {}): Promise<TestSmtpServer> {
  const messages: ReceivedMessage[] = [];
  const transactions: SmtpTransaction[] = [];
  let counted: CountedFault[] = [];
  let fractions: FractionRule[] = [];
  const rejectedRecipients = new Map<string, { code: number; message: string }>();
  let latencyMs = 0;
  let connectionCount = 0;
  /** Each session's current transaction and the fault drawn for it at MAIL FROM. */
  const current = new Map<string, { fault: SmtpFault | null; tx: SmtpTransaction }>();
  /** Sockets by client port, to drop a connection and to close quickly. */
  const sockets = new Map<number, net.Socket>();
  /** Pending delays (latency, delay faults), cleared by close(): none may outlive the server and keep the test process alive. */
  const timers = new Set<NodeJS.Timeout>();
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });
  let holder: ReplyHolder<SmtpTransaction> | null = null;
  /** Held transactions by the client port they wait on, to notice a client that goes away. */
  const heldOn = new Map<number, Set<() => void>>();

  /** Pick the fault for the next connection (CONNECT) or transaction (anything else). */
  function draw(connect: boolean): SmtpFault | null {
    const matches = (f: SmtpFault) => (f.stage === "CONNECT") === connect;
    const entry = counted.find((c) => c.remaining > 0 && matches(c.fault));
    if (entry) {
      entry.remaining -= 1;
      return entry.fault;
    }
    for (const rule of fractions) if (matches(rule.fault) && rule.next()) return rule.fault;
    return null;
  }

  function end(session: SMTPServerSession, outcome: SmtpTransaction["outcome"], stage: SmtpStage | null, code: number) {
    const tx = current.get(session.id)?.tx;
    if (!tx || tx.outcome !== "open") return;
    tx.outcome = outcome;
    tx.stage = stage;
    tx.code = code;
  }

  /** Carry out the fault if it belongs to this stage; otherwise let the command through. */
  async function apply(fault: SmtpFault | null | undefined, stage: SmtpStage, session: SMTPServerSession, callback: (err?: Error | null) => void): Promise<void> {
    if (!fault || fault.stage !== stage) return callback();
    if (fault.action === "delay") {
      await sleep(fault.ms);
      return callback();
    }
    if (fault.action === "drop") {
      end(session, "dropped", stage, 0);
      sockets.get(session.remotePort)?.destroy();
      return;
    }
    end(session, "rejected", stage, fault.code);
    callback(smtpError(fault.code, fault.message ?? defaultMessage(fault.code)));
  }

  const server = new SMTPServer({
    authOptional: !options.auth,
    disabledCommands: ["STARTTLS"],
    logger: false,
    // Let clients authenticate over plain TCP, so AUTH can be tested without TLS.
    allowInsecureAuth: true,
    onAuth(auth, _session, callback) {
      const required = options.auth;
      if (required && (auth.username !== required.user || auth.password !== required.pass)) {
        return callback(smtpError(535, "5.7.8 Authentication credentials invalid"));
      }
      callback(null, { user: auth.username ?? "test" });
    },
    onConnect(session, callback) {
      connectionCount += 1;
      void apply(draw(true), "CONNECT", session, callback);
    },
    onMailFrom(address, session, callback) {
      const fault = draw(false);
      const tx: SmtpTransaction = {
        sessionId: session.id,
        from: address.address,
        to: [],
        refused: [],
        outcome: "open",
        stage: null,
        code: 0,
        messageId: null,
      };
      transactions.push(tx);
      current.set(session.id, { fault, tx });
      void apply(fault, "MAIL", session, callback);
    },
    onRcptTo(address, session, callback) {
      const state = current.get(session.id);
      const refuse = (code: number, message: string) => {
        state?.tx.refused.push(address.address);
        callback(smtpError(code, message));
      };
      const listed = rejectedRecipients.get(address.address.toLowerCase());
      if (listed) return refuse(listed.code, listed.message);
      const fault = state?.fault;
      if (fault?.stage === "RCPT" && fault.action === "reject") {
        // Every recipient is refused; the transaction ends with the first refusal.
        end(session, "rejected", "RCPT", fault.code);
        return refuse(fault.code, fault.message ?? defaultMessage(fault.code));
      }
      void apply(fault, "RCPT", session, (err) => {
        if (!err) state?.tx.to.push(address.address);
        callback(err);
      });
    },
    onData(stream, session, callback) {
      const state = current.get(session.id);
      const fault = state?.fault;
      if (fault?.stage === "DATA" && fault.action === "drop") {
        // Cut the connection once part of the message is in: the client is mid-DATA.
        stream.once("data", () => void apply(fault, "DATA", session, callback));
        stream.resume();
        return;
      }
      const chunks: Buffer[] = [];
      stream.on("data", (chunk: Buffer) => chunks.push(chunk));
      stream.on("end", () => {
        const raw = Buffer.concat(chunks).toString("utf8");
        const parsed = parseMessage(raw);
        if (state) state.tx.messageId = parsed.headers["message-id"] ?? null;
        const accept = () => {
          messages.push({
            sessionId: session.id,
            from: session.envelope.mailFrom ? session.envelope.mailFrom.address : "",
            to: session.envelope.rcptTo.map((r) => r.address),
            raw,
            headers: parsed.headers,
            messageId: parsed.headers["message-id"] ?? null,
            subject: parsed.headers["subject"] ?? null,
            text: parsed.text,
            html: parsed.html,
            receivedAt: new Date(),
          });
          end(session, "accepted", null, 250);
          callback(null, `2.0.0 Ok: queued as ${session.id}.${messages.length}`);
        };
        if (fault?.stage === "DATA" && fault.action === "reject") return void apply(fault, "DATA", session, callback);
        const port = session.remotePort;
        const h = holder;
        const cut = () => {
          end(session, "dropped", "DATA", 0);
          sockets.get(port)?.destroy();
        };
        const held = state && !fault && h ? h.take(state.tx, accept, cut) : null;
        if (held) {
          const gone = () => h!.clientGone(held);
          // Noticed when its connection closes (the client gave up or died).
          if (!sockets.has(port)) return gone();
          heldOn.set(port, (heldOn.get(port) ?? new Set()).add(gone));
          return;
        }
        void (async () => {
          if (fault?.stage === "DATA" && fault.action === "delay") await sleep(fault.ms);
          if (latencyMs > 0) await sleep(latencyMs);
          accept();
        })();
      });
    },
  });
  server.on("error", () => {});
  server.server.on("connection", (socket: net.Socket) => {
    const port = socket.remotePort;
    if (port === undefined) return;
    sockets.set(port, socket);
    socket.on("close", () => {
      sockets.delete(port);
      for (const gone of heldOn.get(port) ?? []) gone();
      heldOn.delete(port);
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      server.server.off("error", reject);
      resolve();
    });
  });
  const port = (server.server.address() as net.AddressInfo).port;
  const openConnections = () => new Promise<number>((resolve, reject) => server.server.getConnections((err, n) => (err ? reject(err) : resolve(n))));

  return {
    url: `smtp://127.0.0.1:${port}`,
    port,
    messages,
    transactions,
    get connections() {
      return connectionCount;
    },
    faultNext(count, fault) {
      counted.push({ remaining: count, fault });
    },
    rejectNext(count, stage, code, message) {
      counted.push({ remaining: count, fault: { action: "reject", stage, code, ...(message ? { message } : {}) } });
    },
    dropNext(count, stage = "DATA") {
      counted.push({ remaining: count, fault: { action: "drop", stage } });
    },
    faultFraction(fraction, fault, options = {}) {
      if (!(fraction >= 0 && fraction <= 1)) throw new Error(`fraction must be within [0, 1], got ${fraction}`);
      let next: () => boolean;
      if (options.seed !== undefined) {
        const random = seeded(options.seed);
        next = () => random() < fraction;
      } else {
        let n = 0;
        next = () => {
          n += 1;
          return Math.floor(n * fraction) > Math.floor((n - 1) * fraction);
        };
      }
      fractions.push({ fraction, fault, next });
    },
    rejectRecipient(address, code, message) {
      rejectedRecipients.set(address.toLowerCase(), { code, message: message ?? defaultMessage(code) });
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    holdReplies(options = {}) {
      if (holder?.holding) throw new Error("a hold is already holding SMTP replies: release or abort it first");
      holder = new ReplyHolder<SmtpTransaction>("SMTP server", options, openConnections, () => `${messages.length} messages accepted`);
      return holder.controller();
    },
    openConnections,
    reset() {
      counted = [];
      fractions = [];
      rejectedRecipients.clear();
      latencyMs = 0;
      messages.length = 0;
      transactions.length = 0;
    },
    async waitForMessages(count, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (messages.length < count) {
        if (Date.now() > deadline) {
          throw new Error(`timed out after ${timeoutMs} ms waiting for ${count} messages (got ${messages.length})`);
        }
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return messages.slice();
    },
    async close() {
      holder?.close();
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets.values()) socket.destroy();
      await closed;
    },
  };
}

// ---------------------------------------------------------------------------
// Just enough MIME to check what a client sent: headers (RFC 2047 words
// decoded), text/plain and text/html parts (quoted-printable or base64).
// ---------------------------------------------------------------------------

export interface ParsedMessage {
  headers: Record<string, string>;
  text: string | null;
  html: string | null;
}

function decodeQuotedPrintable(body: string): Buffer {
  const bytes: number[] = [];
  const soft = body.replace(/=\r?\n/g, "");
  for (let i = 0; i < soft.length; i++) {
    const ch = soft[i]!;
    const hex = soft.slice(i + 1, i + 3);
    if (ch === "=" && /^[0-9A-Fa-f]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else {
      for (const b of Buffer.from(ch, "utf8")) bytes.push(b);
    }
  }
  return Buffer.from(bytes);
}

/** `=?UTF-8?Q?...?=` / `=?UTF-8?B?...?=` words; whitespace between adjacent words is dropped (RFC 2047 §6.2). */
export function decodeEncodedWords(value: string): string {
  return value.replace(/(=\?[^?]+\?[BbQq]\?[^?]*\?=)\s+(?==\?)/g, "$1").replace(/=\?([^?]+)\?([BbQq])\?([^?]*)\?=/g, (_m, charset: string, encoding: string, data: string) => {
    const buffer = encoding.toUpperCase() === "B" ? Buffer.from(data, "base64") : decodeQuotedPrintable(data.replace(/_/g, " "));
    return buffer.toString(/^utf-?8$/i.test(charset) ? "utf8" : "latin1");
  });
}

function splitHeaders(raw: string): { headers: Record<string, string>; body: string } {
  const match = /\r?\n\r?\n/.exec(raw);
  const head = match ? raw.slice(0, match.index) : raw;
  const body = match ? raw.slice(match.index + match[0].length) : "";
  const headers: Record<string, string> = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    headers[line.slice(0, colon).trim().toLowerCase()] = decodeEncodedWords(line.slice(colon + 1).trim());
  }
  return { headers, body };
}

function param(header: string | undefined, name: string): string | null {
  const match = new RegExp(`${name}="?([^";]+)"?`, "i").exec(header ?? "");
  return match ? match[1]! : null;
}

function decodeBody(body: string, headers: Record<string, string>): string {
  const encoding = (headers["content-transfer-encoding"] ?? "7bit").toLowerCase();
  const buffer =
    encoding === "base64" ? Buffer.from(body.replace(/\s+/g, ""), "base64") : encoding === "quoted-printable" ? decodeQuotedPrintable(body) : Buffer.from(body, "utf8");
  return buffer.toString("utf8");
}

export function parseMessage(raw: string): ParsedMessage {
  const { headers, body } = splitHeaders(raw);
  const result: ParsedMessage = { headers, text: null, html: null };
  const walk = (partHeaders: Record<string, string>, partBody: string) => {
    const type = (partHeaders["content-type"] ?? "text/plain").toLowerCase();
    if (type.startsWith("multipart/")) {
      const boundary = param(partHeaders["content-type"], "boundary");
      if (!boundary) return;
      const sections = partBody.split(new RegExp(`\\r?\\n?--${boundary.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(?:--)?[ \\t]*\\r?\\n?`));
      for (const section of sections.slice(1, -1)) {
        const part = splitHeaders(section);
        walk(part.headers, part.body);
      }
    } else if (type.startsWith("text/plain") && result.text === null) {
      result.text = decodeBody(partBody, partHeaders);
    } else if (type.startsWith("text/html") && result.html === null) {
      result.html = decodeBody(partBody, partHeaders);
    }
  };
  walk(headers, body);
  return result;
}
