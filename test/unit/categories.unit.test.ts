import type { Entity } from "../../src/entities/entity.schemas";
import { resolveChannels } from "../../src/notification/preferences";

const entity = (prefs: Partial<Entity["preferences"]> = {}, over: Partial<Entity> = {}): Entity => ({
  id: "ada",
  kind: "user",
  name: "Ada",
  email: "ada@example.com",
  slack: "U0ADA0001",
  ...over,
  preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all", ...prefs },
});
const sent = (r: ReturnType<typeof resolveChannels>) => r.channels.map((c) => c.channel);

describe("preferences per category", () => {
  const ada = entity({ categories: { marketing: { optedOut: "all" }, billing: { channels: ["email"] }, digest: { optedOut: ["slack"] } } });

  it("an opt-out of a whole category stops its notifications and says so; other categories go out as usual", () => {
    const marketing = resolveChannels(ada, undefined, { category: "marketing" });
    expect(sent(marketing)).toEqual([]);
    expect(marketing.allOptedOut).toBe(true);
    expect(marketing.skipped).toEqual([
      { channel: "email", reason: "opted out of category 'marketing'" },
      { channel: "slack", reason: "opted out of category 'marketing'" },
    ]);
    expect(sent(resolveChannels(ada, undefined, { category: "security" }))).toEqual(["email", "slack"]);
    expect(sent(resolveChannels(ada))).toEqual(["email", "slack"]);
  });

  it("a category's channels replace the defaults; its per-channel opt-out removes one", () => {
    expect(sent(resolveChannels(ada, undefined, { category: "billing" }))).toEqual(["email"]);
    expect(sent(resolveChannels(ada, undefined, { category: "digest" }))).toEqual(["email"]);
  });

  it("the client's override still loses to the category's opt-out", () => {
    expect(sent(resolveChannels(ada, ["slack"], { category: "digest" }))).toEqual([]);
  });

  it("a critical category ignores every opt-out, the entity's and the category's", () => {
    const muted = entity({ optedOut: ["email", "slack"], categories: { security: { optedOut: "all" } } });
    expect(sent(resolveChannels(muted, undefined, { category: "security", critical: true }))).toEqual(["email", "slack"]);
    expect(sent(resolveChannels(muted, undefined, { category: "security" }))).toEqual([]);
  });

  it("a critical notification to an entity that wants no channel goes on every channel it can be reached on", () => {
    const none = entity({ channels: [] }, { slack: null });
    expect(sent(resolveChannels(none, undefined, { category: "security", critical: true }))).toEqual(["email"]);
  });
});
