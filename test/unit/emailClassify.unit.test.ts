import { ExternalError } from "../../src/errors/errors";
import { classifySmtpError, redactSmtpUrl, sinkFileName } from "../../src/email/transport";

/** Errors shaped as nodemailer 10 builds them (SMTPConnection._formatError). */
function smtpError(message: string, fields: Record<string, unknown>): Error {
  return Object.assign(new Error(message), fields);
}

function reply(code: string, response: string, command: string, message: string): Error {
  return smtpError(`${message}: ${response}`, {
    code,
    response,
    responseCode: Number(response.slice(0, 3)),
    command,
  });
}

describe("classifySmtpError", () => {
  it.each([
    ["550 at DATA", reply("EMESSAGE", "550 5.7.1 Message rejected as spam", "DATA", "Message failed"), 550],
    ["554 at DATA", reply("EMESSAGE", "554 5.7.0 Transaction failed", "DATA", "Message failed"), 554],
    ["553 at MAIL FROM", reply("EENVELOPE", "553 5.1.8 Sender address rejected", "MAIL FROM", "Mail command failed"), 553],
    [
      "every recipient refused with 550",
      Object.assign(reply("EENVELOPE", "550 5.1.1 <ghost@example.com>: Recipient address rejected", "RCPT TO", "Can't send mail - all recipients were rejected"), {
        rejected: ["ghost@example.com"],
      }),
      550,
    ],
    ["535 authentication failure", reply("EAUTH", "535 5.7.8 Authentication credentials invalid", "AUTH PLAIN", "Invalid login"), 535],
    ["552 message too big", reply("EMESSAGE", "552 5.3.4 Message size exceeds fixed limit", "DATA", "Message failed"), 552],
  ])("%s is permanent", (_label, error, code) => {
    const classified = classifySmtpError(error);
    expect(classified).toBeInstanceOf(ExternalError);
    expect(classified.transient).toBe(false);
    expect(classified.details.smtpCode).toBe(code);
    expect(classified.details.classification).toBe("permanent");
    expect(classified.message).toBe(error.message);
    expect(classified.cause).toBe(error);
  });

  it.each([
    ["451 at DATA", reply("EMESSAGE", "451 4.3.0 Try again later", "DATA", "Message failed"), 451],
    ["450 greylisting at RCPT", reply("EENVELOPE", "450 4.2.0 Greylisted, try again", "RCPT TO", "Can't send mail - all recipients were rejected"), 450],
    ["421 greeting", reply("EPROTOCOL", "421 4.3.2 Service not available, closing channel", "CONN", "Invalid greeting. response=421 4.3.2 busy"), 421],
    ["454 temporary auth failure", reply("EAUTH", "454 4.7.0 Temporary authentication failure", "AUTH PLAIN", "Invalid login"), 454],
    ["452 mailbox full", reply("EMESSAGE", "452 4.2.2 Mailbox full", "DATA", "Message failed"), 452],
    ["503 bad sequence (session state, not the message)", reply("EENVELOPE", "503 5.5.1 Error: need MAIL command", "RCPT TO", "Recipient command failed"), 503],
  ])("%s is transient", (_label, error, code) => {
    const classified = classifySmtpError(error);
    expect(classified.transient).toBe(true);
    expect(classified.details.smtpCode).toBe(code);
    expect(classified.details.classification).toBe("transient");
  });

  it.each([
    [
      "connection refused",
      smtpError("connect ECONNREFUSED 127.0.0.1:2525", { code: "ESOCKET", originalCode: "ECONNREFUSED", errno: -111, syscall: "connect", command: "CONN" }),
      "ESOCKET",
    ],
    ["connection reset", smtpError("read ECONNRESET", { code: "ESOCKET", originalCode: "ECONNRESET", command: "CONN" }), "ESOCKET"],
    ["connection dropped mid-DATA", smtpError("Connection closed unexpectedly", { code: "ECONNECTION", command: "CONN" }), "ECONNECTION"],
    ["greeting timeout", smtpError("Greeting never received", { code: "ETIMEDOUT", timeoutType: "GREETING_TIMEOUT", command: "CONN" }), "ETIMEDOUT"],
    ["socket timeout", smtpError("Timeout", { code: "ETIMEDOUT", timeoutType: "SOCKET_TIMEOUT", command: "CONN" }), "ETIMEDOUT"],
    ["DNS failure", smtpError("getaddrinfo ENOTFOUND smtp.example.invalid", { code: "EDNS", originalCode: "ENOTFOUND", command: "CONN" }), "EDNS"],
    ["raw Node socket error", smtpError("connect EHOSTUNREACH 10.0.0.1:25", { code: "EHOSTUNREACH" }), "EHOSTUNREACH"],
    ["send aborted by shutdown", Object.assign(smtpError("Message sending aborted", { code: "EABORT" }), { name: "AbortError" }), "EABORT"],
    ["an unknown error", new TypeError("Cannot read properties of undefined"), null],
  ])("%s is transient, with no SMTP code", (_label, error, code) => {
    const classified = classifySmtpError(error);
    expect(classified.transient).toBe(true);
    expect(classified.details.smtpCode).toBeNull();
    expect(classified.details.code).toBe(code);
  });

  it.each([
    ["no credentials for a server that requires them", smtpError('Missing credentials for "PLAIN"', { code: "ENOAUTH", command: "API" }), "ENOAUTH"],
    ["an invalid recipient address refused before sending", smtpError('Invalid recipient "not an address"', { code: "EENVELOPE", command: "API" }), "EENVELOPE"],
    ["bad configuration", smtpError("Invalid configuration", { code: "ECONFIG" }), "ECONFIG"],
  ])("%s is permanent, with no SMTP code", (_label, error, code) => {
    const classified = classifySmtpError(error);
    expect(classified.transient).toBe(false);
    expect(classified.details.smtpCode).toBeNull();
    expect(classified.details.code).toBe(code);
  });

  it("keeps what an operator needs in details, as plain JSON", () => {
    const error = Object.assign(reply("EENVELOPE", "550 5.1.1 No such user", "RCPT TO", "Can't send mail - all recipients were rejected"), {
      rejected: ["a@example.com", "b@example.com"],
    });
    const { details } = classifySmtpError(error);
    expect(details).toEqual({
      smtpCode: 550,
      code: "EENVELOPE",
      classification: "permanent",
      command: "RCPT TO",
      response: "550 5.1.1 No such user",
      rejected: ["a@example.com", "b@example.com"],
    });
    expect(JSON.parse(JSON.stringify(details))).toEqual(details);
  });

  it("keeps the system error code under the nodemailer one", () => {
    const { details } = classifySmtpError(smtpError("connect ECONNREFUSED 127.0.0.1:1", { code: "ESOCKET", originalCode: "ECONNREFUSED", command: "CONN" }));
    expect(details).toMatchObject({ code: "ESOCKET", originalCode: "ECONNREFUSED", smtpCode: null });
  });

  it("returns an ExternalError unchanged and copes with non-errors", () => {
    const already = new ExternalError("already classified", false, { smtpCode: 550 });
    expect(classifySmtpError(already)).toBe(already);
    expect(classifySmtpError("socket hang up").message).toBe("socket hang up");
    expect(classifySmtpError(undefined).transient).toBe(true);
  });
});

describe("sinkFileName", () => {
  it("keeps a safe message id readable", () => {
    expect(sinkFileName("<op-1.email@tidings.example>")).toBe("op-1.email@tidings.example.eml");
  });

  it("never escapes the directory, and distinct ids never share a file", () => {
    const a = sinkFileName("<../../etc/passwd@x>");
    const b = sinkFileName("<.._.._etc_passwd@x>");
    for (const name of [a, b]) {
      expect(name).not.toMatch(/[/\\]/);
      expect(name.startsWith(".")).toBe(false);
    }
    expect(a).not.toBe(b);
    expect(sinkFileName(`<${"x".repeat(1000)}@y>`).length).toBeLessThan(200);
  });
});

describe("redactSmtpUrl", () => {
  it("hides the password but keeps what identifies the server", () => {
    expect(redactSmtpUrl("smtps://mailer:s3cret@smtp.example.com:465")).toBe("smtps://mailer:***@smtp.example.com:465");
    expect(redactSmtpUrl("smtp://127.0.0.1:2525")).toBe("smtp://127.0.0.1:2525");
  });
});
