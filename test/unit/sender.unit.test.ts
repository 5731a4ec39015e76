import { loadConfig } from "../../src/config/config";
import { isPlaceholderDomain, messageIdDomain, parseSender, senderWarnings } from "../../src/email/sender";
import { SendEmailOp } from "../../src/email/email.schemas";
import { ValidationError } from "../../src/errors/errors";
import { parseSendNotification } from "../../src/notification/enqueue";
import { messageIdFor } from "../../src/email/sender";

describe("a subject with CR or LF is refused, not flattened", () => {
  it.each(["a\r\nBcc: x@y", "two\nlines", "carriage\rreturn", "trailing newline\n", "\r\nleading"])("%j", (subject) => {
    let error: unknown;
    try {
      parseSendNotification({ entityId: "ada", subject, text: "t" });
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).issues).toEqual([{ path: "subject", message: expect.stringMatching(/one line \(no CR or LF\)/) }]);
    expect((error as Error).message).toMatch(/subject: must be one line/);
  });

  it("spaces around a subject are still trimmed, and tabs and other characters kept", () => {
    expect(parseSendNotification({ entityId: "ada", subject: "  Report\tready \u2028 now ", text: "t" }).subject).toBe("Report\tready \u2028 now");
  });
});

describe("Message-IDs end in the sender's domain, or the configured one", () => {
  it("takes the domain of EMAIL_FROM, in ASCII and lower case", () => {
    expect(messageIdDomain(loadConfig({ EMAIL_FROM: "Notifications <notify@Mail.Acme.io>" }))).toBe("mail.acme.io");
    expect(messageIdDomain(loadConfig({ EMAIL_FROM: "notify@jõgeva.ee" }))).toBe("xn--jgeva-dua.ee");
    expect(messageIdDomain(loadConfig({}))).toBe("localhost");
  });

  it("EMAIL_MESSAGE_ID_DOMAIN wins, and must be a domain", () => {
    expect(messageIdDomain(loadConfig({ EMAIL_FROM: "notify@acme.io", EMAIL_MESSAGE_ID_DOMAIN: "msgid.acme.io" }))).toBe("msgid.acme.io");
    expect(() => loadConfig({ EMAIL_MESSAGE_ID_DOMAIN: "not a domain" })).toThrow(/^configuration error: EMAIL_MESSAGE_ID_DOMAIN must be a domain name/);
  });

  it("a Message-ID built from an operation id is one the email schema takes, stable for the same operation", () => {
    const id = messageIdFor("8c1d3a52-7f0e-4b1a-9c3d-2e5f6a7b8c9d:alert-12:email", "mail.acme.io");
    expect(id).toBe("<8c1d3a52-7f0e-4b1a-9c3d-2e5f6a7b8c9d.alert-12.email@mail.acme.io>");
    expect(SendEmailOp.shape.messageId.parse(id)).toBe(id);
    expect(messageIdFor("8c1d3a52-7f0e-4b1a-9c3d-2e5f6a7b8c9d:alert-12:email", "mail.acme.io")).toBe(id);
  });

  it("EMAIL_FROM must be one address at a domain", () => {
    for (const [from, problem] of [
      ["nobody", /of the form name@domain/],
      ["a@acme.io, b@acme.io", /one address/],
      ["x@-bad-.io", /valid domain/],
    ] as const) {
      expect(() => loadConfig({ EMAIL_FROM: from })).toThrow(problem);
    }
    expect(parseSender('"Ops, Team" <ops@ACME.io>')).toEqual({ sender: { address: "ops@ACME.io", domain: "acme.io" } });
  });
});

describe("start-up warnings about placeholder addresses", () => {
  it.each(["localhost", "mailhost", "tidings.invalid", "acme.test", "acme.example", "printer.local", "box.localdomain", "example.com", "mail.example.org"])(
    "%s is a placeholder",
    (domain) => expect(isPlaceholderDomain(domain)).toBe(true),
  );
  it.each(["acme.io", "mail.acme.co.uk", "examples.com", "test.acme.io", "[192.0.2.1]"])("%s is not", (domain) => expect(isPlaceholderDomain(domain)).toBe(false));

  it("with a real SMTP_URL, a placeholder sender or internal team address is warned about, naming the setting", () => {
    const withSmtp = { SMTP_URL: "smtp://smtp.acme.io:587" };
    const warnings = senderWarnings(loadConfig(withSmtp));
    expect(warnings).toHaveLength(2);
    expect(warnings[0]).toMatch(/^EMAIL_FROM is "tidings <tidings@localhost>": mail from localhost/);
    expect(warnings[1]).toMatch(/^INTERNAL_TEAM_EMAIL is "internal-team@tidings.invalid"/);
    for (const from of ["notify@acme.invalid", "notify@acme.test", "notify@acme.example", "notify@acme.local"]) {
      expect(senderWarnings(loadConfig({ ...withSmtp, EMAIL_FROM: from, INTERNAL_TEAM_EMAIL: "oncall@acme.io" }))).toEqual([expect.stringMatching(/^EMAIL_FROM /)]);
    }
    expect(senderWarnings(loadConfig({ ...withSmtp, EMAIL_FROM: "notify@acme.io", INTERNAL_TEAM_EMAIL: "oncall@acme.io" }))).toEqual([]);
  });

  it("without SMTP_URL (the local sink) the defaults are right and nothing is said", () => {
    expect(senderWarnings(loadConfig({}))).toEqual([]);
  });
});
