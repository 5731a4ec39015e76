import type { Channel, Entity } from "../entities/entity.schemas";
import { channelOf } from "./channels";

export interface ChannelResolution {
  /** Channels to send on, in the entity's order of preference. */
  channels: Array<{ channel: Channel; destination: string }>;
  /** With `delivery: fallback`: the usable channels to try next, in order, each only if the one before failed for good. */
  fallbacks: Array<{ channel: Channel; destination: string }>;
  /** Channels asked for but not used, and why. */
  skipped: Array<{ channel: Channel; reason: string }>;
  /** Every channel asked for was opted out of. */
  allOptedOut: boolean;
}

/** An entity keeps its destination on each channel in the field named after the channel. */
function destinationOf(entity: Entity, channel: Channel): string | null {
  return entity[channel];
}

/**
 * Which channels a notification goes out on. The client's override replaces
 * the entity's wanted channels, but an opt-out always wins. A channel without
 * a contact detail is skipped with the reason. `delivery: first` keeps only
 * the most preferred usable channel; `delivery: fallback` sends on that one
 * and keeps the others, in order, to fall back on.
 */
export function resolveChannels(entity: Entity, override?: readonly Channel[]): ChannelResolution {
  const wanted = override ?? entity.preferences.channels;
  const channels: ChannelResolution["channels"] = [];
  const fallbacks: ChannelResolution["fallbacks"] = [];
  const skipped: ChannelResolution["skipped"] = [];
  for (const channel of wanted) {
    if (entity.preferences.optedOut.includes(channel)) {
      skipped.push({ channel, reason: "opted out" });
      continue;
    }
    const destination = destinationOf(entity, channel);
    if (!destination) {
      skipped.push({ channel, reason: channelOf(channel).noDestinationReason });
      continue;
    }
    if (entity.preferences.delivery === "first" && channels.length > 0) {
      skipped.push({ channel, reason: "delivery is 'first' and a more preferred channel is used" });
      continue;
    }
    if (entity.preferences.delivery === "fallback" && channels.length > 0) {
      fallbacks.push({ channel, destination });
      continue;
    }
    channels.push({ channel, destination });
  }
  // Wanting no channel at all is opting out of every one.
  const allOptedOut = channels.length === 0 && skipped.every((s) => s.reason === "opted out");
  return { channels, fallbacks, skipped, allOptedOut };
}
