import type { Entity } from "../../src/entities/entity.schemas";
import { resolveChannels } from "../../src/notification/preferences";

const entity = (over: Partial<Entity> = {}, prefs: Partial<Entity["preferences"]> = {}): Entity => ({
  id: "e",
  kind: "user",
  name: "E",
  email: "e@example.com",
  slack: "U0E000001",
  ...over,
  preferences: { channels: ["email", "slack"], optedOut: [], delivery: "all", ...prefs },
});

describe("channel preferences", () => {
  it("uses the wanted channels in order", () => {
    expect(resolveChannels(entity({}, { channels: ["slack", "email"] })).channels.map((c) => c.channel)).toEqual(["slack", "email"]);
  });
  it("an opt-out wins over the client's override", () => {
    const r = resolveChannels(entity({}, { optedOut: ["slack"] }), ["slack", "email"]);
    expect(r.channels.map((c) => c.channel)).toEqual(["email"]);
    expect(r.skipped).toEqual([{ channel: "slack", reason: "opted out" }]);
  });
  it("skips a channel without a contact detail", () => {
    const r = resolveChannels(entity({ email: null }));
    expect(r.channels.map((c) => c.channel)).toEqual(["slack"]);
    expect(r.skipped).toEqual([{ channel: "email", reason: "no email address" }]);
    expect(r.allOptedOut).toBe(false);
  });
  it("all opted out, or wanting nothing, is opting out of everything", () => {
    expect(resolveChannels(entity({}, { optedOut: ["email", "slack"] })).allOptedOut).toBe(true);
    expect(resolveChannels(entity({}, { channels: [] })).allOptedOut).toBe(true);
  });
  it("missing contact details are not an opt-out", () => {
    const r = resolveChannels(entity({ email: null, slack: null }));
    expect(r.channels).toEqual([]);
    expect(r.allOptedOut).toBe(false);
  });
  it("delivery 'first' keeps only the most preferred usable channel", () => {
    const r = resolveChannels(entity({ email: null }, { delivery: "first" }));
    expect(r.channels.map((c) => c.channel)).toEqual(["slack"]);
    const both = resolveChannels(entity({}, { delivery: "first" }));
    expect(both.channels.map((c) => c.channel)).toEqual(["email"]);
  });
});
