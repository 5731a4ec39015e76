import { ConfigError, loadConfig } from "../../src/config/config";
import { SendEmailOp } from "../../src/email/email.schemas";

describe("configuration", () => {
  it("has defaults for a fresh machine", () => {
    const config = loadConfig({});
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.PORT).toBe(3000);
    expect(config.DATA_DIR).toBe(".data");
  });

  it("defaults pass their own checks: the default internal team address is one an alert email can carry", () => {
    const config = loadConfig({});
    expect(loadConfig({ INTERNAL_TEAM_EMAIL: config.INTERNAL_TEAM_EMAIL }).INTERNAL_TEAM_EMAIL).toBe(config.INTERNAL_TEAM_EMAIL);
    expect(() =>
      SendEmailOp.parse({
        operationId: "n:alert-1:email",
        notificationId: "n",
        purpose: "internal_alert",
        entityId: null,
        to: [config.INTERNAL_TEAM_EMAIL],
        subject: "s",
        text: "t",
        messageId: "<n.alert@tidings>",
        tags: {},
      }),
    ).not.toThrow();
  });

  it("names the variable and the problem in one line", () => {
    expect(() => loadConfig({ PORT: "eighty" })).toThrow(ConfigError);
    try {
      loadConfig({ PORT: "eighty" });
    } catch (error) {
      const message = (error as Error).message;
      expect(message).toMatch(/^configuration error: PORT .*"eighty"/);
      expect(message).not.toContain("\n");
    }
    expect(() => loadConfig({ DATABASE_URL: "mysql://x" })).toThrow(/DATABASE_URL must be a postgres:\/\/ connection string/);
    expect(() => loadConfig({ RUN_API: "maybe" })).toThrow(/RUN_API/);
  });

  it("treats an empty value as unset", () => {
    expect(loadConfig({ DATABASE_URL: "" }).DATABASE_URL).toBeUndefined();
  });
});
