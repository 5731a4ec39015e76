import { Writable } from "node:stream";
import { ConfigError, loadConfig } from "../../src/config/config";
import { createEmailTransport } from "../../src/email/transport";
import { createLogger } from "../../src/logging/logger";
import { describeSecret, redactSecrets, redactUrl } from "../../src/logging/redact";

const SECRET = "S3cr3t-Pa55";

describe("redactSecrets", () => {
  it.each([
    ["postgres://u:S3cr3t-Pa55@127.0.0.1:1/x", "postgres://u:***@127.0.0.1:1/x"],
    ["smtps://mailer:S3cr3t-Pa55@smtp.example.com:465", "smtps://mailer:***@smtp.example.com:465"],
    // Malformed: the colon after the scheme missing, as a user typed it.
    ["smtps//user:S3cr3t-Pa55@host", "smtps//user:***@host"],
    // Unencoded @ / : in the password: hidden whole, up to the last @.
    ["smtp://user:S3cr@t/Pa:55@host:25", "smtp://user:***@host:25"],
    ['(got "postgres://u:S3cr3t-Pa55@db/x")', '(got "postgres://u:***@db/x")'],
    ["postgres://u@db/x?sslmode=require&password=S3cr3t-Pa55", "postgres://u@db/x?sslmode=require&password=***"],
    ["token xoxb-1234-5678-S3cr3t-Pa55 in a sentence", "token xoxb-*** in a sentence"],
    ["xapp-1-A0-S3cr3t-Pa55", "xapp-***"],
  ])("%s", (input, expected) => {
    expect(redactSecrets(input)).toBe(expected);
    expect(redactSecrets(input)).not.toContain(SECRET);
  });

  it("leaves what is not a secret alone: a user name alone, hosts, ports, databases, email addresses", () => {
    for (const text of [
      "postgres://postgres@127.0.0.1:5432/postgres",
      "smtp://127.0.0.1:2525",
      "sent to ada@example.com (Message-ID <n.email@example.com>)",
      "listening on http://127.0.0.1:3000",
    ]) {
      expect(redactSecrets(text)).toBe(text);
    }
  });
});

describe("redactUrl (a setting's value, however malformed)", () => {
  it.each([
    ["smtp:user:S3cr3t-Pa55@host", "smtp:user:***@host"],
    ["user:S3cr3t-Pa55@host:25", "user:***@host:25"],
    ["mysql://root:S3cr3t-Pa55@db/x", "mysql://root:***@db/x"],
  ])("%s", (input, expected) => {
    expect(redactUrl(input)).toBe(expected);
  });
});

it("describeSecret shows a short prefix and the length only", () => {
  expect(describeSecret("xoxq1234S3cr3t-Pa55xyz")).toBe("xoxq1*** (22 characters)");
  expect(describeSecret("abc")).toBe("*** (3 characters)");
});

describe("configuration errors never print a secret", () => {
  const cases: [string, Record<string, string>][] = [
    ["SMTP_URL missing the colon", { SMTP_URL: `smtps//user:${SECRET}@smtp.example.com` }],
    ["SMTP_URL with another scheme", { SMTP_URL: `http://user:${SECRET}@smtp.example.com` }],
    ["SMTP_URL with no slashes", { SMTP_URL: `smtp:user:${SECRET}@smtp.example.com` }],
    ["DATABASE_URL of another database", { DATABASE_URL: `mysql://root:${SECRET}@db.example.com/app` }],
    ["DATABASE_URL missing the colon", { DATABASE_URL: `postgres//u:${SECRET}@db.example.com/app` }],
    ["SLACK_BOT_TOKEN with a stray prefix", { SLACK_BOT_TOKEN: `Bearer xoxb-1234-${SECRET}` }],
    ["SLACK_BOT_TOKEN of the wrong kind", { SLACK_BOT_TOKEN: `xoxq1234${SECRET}` }],
  ];
  it.each(cases)("%s", (_label, env) => {
    const variable = Object.keys(env)[0]!;
    let message = "";
    try {
      loadConfig(env);
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      message = (error as Error).message;
    }
    expect(message).toMatch(new RegExp(`^configuration error: ${variable} `));
    expect(message).toContain("got ");
    expect(message).not.toContain(SECRET);
    expect(message).not.toContain("\n");
  });
});

describe("the logger hides secrets", () => {
  function capture() {
    const lines: string[] = [];
    const stream = new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    });
    return { logger: createLogger("info", "test", stream), lines };
  }

  it("in messages, in known keys, nested keys and logged errors", () => {
    const { logger, lines } = capture();
    logger.info(`connecting to postgres://u:${SECRET}@db/x`);
    logger.info({ url: `smtp://mailer:${SECRET}@smtp.example.com`, password: SECRET, config: { SLACK_BOT_TOKEN: `xoxb-1-${SECRET}` } }, "settings");
    logger.info({ headers: { authorization: `Bearer ${SECRET}` } }, "request");
    logger.error({ err: new Error(`connect failed for smtps://a:${SECRET}@mail.example.com`) }, "send failed");
    logger.error(new Error(`token xoxb-99-${SECRET} refused`));
    logger.warn("%s then %s", `postgres://u:${SECRET}@db/x`, "more");
    logger.warn(`endpoint registered with whsec_${SECRET}+/=, signed`);
    expect(lines).toHaveLength(7);
    for (const line of lines) expect(line).not.toContain(SECRET);
    const settings = JSON.parse(lines[1]!);
    expect(settings.url).toBe("smtp://mailer:***@smtp.example.com");
    expect(settings.password).toBe("***");
    expect(settings.config.SLACK_BOT_TOKEN).toBe("***");
    // What is not secret stays readable.
    expect(JSON.parse(lines[0]!).msg).toBe("connecting to postgres://u:***@db/x");
    expect(JSON.parse(lines[3]!).err.message).toBe("connect failed for smtps://a:***@mail.example.com");
    expect(JSON.parse(lines[6]!).msg).toBe("endpoint registered with whsec_***, signed");
  });
});

it("the SMTP transport describes itself without the password", async () => {
  const transport = createEmailTransport({ smtpUrl: `smtps://mailer:${SECRET}@smtp.example.com:465`, from: "t@example.com", sinkDir: "/nonexistent" });
  try {
    expect(transport.describe()).toContain("smtps://mailer:***@smtp.example.com:465");
    expect(transport.describe()).not.toContain(SECRET);
  } finally {
    await transport.close?.();
  }
});
