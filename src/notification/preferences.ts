import { CHANNELS, type Channel, type Entity } from "../entities/entity.schemas";
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

/** The notification's category, and whether it is critical (its opt-outs do not apply). */
export interface CategoryContext {
  category?: string | undefined;
  critical?: boolean;
}

/** An entity keeps its destination on each channel in the field named after the channel. */
function destinationOf(entity: Entity, channel: Channel): string | null {
  return entity[channel];
}

/**
 * Which channels a notification goes out on. The wanted channels are the
 * client's override, else the entity's for the notification's category,
 * else its defaults. An opt-out (the entity's, or for the category) always
 * wins, except for a critical category, which no opt-out stops: it goes on
 * the wanted channels, or on every channel the entity can be reached on when
 * it wants none. A channel without a contact detail is skipped with the
 * reason. `delivery: first` keeps only the most preferred usable channel;
 * `delivery: fallback` sends on that one and keeps the others, in order, to
 * fall back on.
 */
export function resolveChannels(entity: Entity, override?: readonly Channel[], context: CategoryContext = {}): ChannelResolution {
  const prefs = entity.preferences;
  const forCategory = context.category === undefined ? undefined : prefs.categories?.[context.category];
  let wanted: readonly Channel[] = override ?? forCategory?.channels ?? prefs.channels;
  if (context.critical && wanted.length === 0) wanted = CHANNELS.filter((c) => destinationOf(entity, c));
  const optedOut = (channel: Channel): string | null => {
    if (context.critical) return null;
    if (prefs.optedOut.includes(channel)) return "opted out";
    const category = forCategory?.optedOut;
    if (category === "all" || category?.includes(channel)) return `opted out of category '${context.category}'`;
    return null;
  };
  const channels: ChannelResolution["channels"] = [];
  const fallbacks: ChannelResolution["fallbacks"] = [];
  const skipped: ChannelResolution["skipped"] = [];
  for (const channel of wanted) {
    const optOut = optedOut(channel);
    if (optOut) {
      skipped.push({ channel, reason: optOut });
      continue;
    }
    const destination = destinationOf(entity, channel);
    if (!destination) {
      skipped.push({ channel, reason: channelOf(channel).noDestinationReason });
      continue;
    }
    if (prefs.delivery === "first" && channels.length > 0) {
      skipped.push({ channel, reason: "delivery is 'first' and a more preferred channel is used" });
      continue;
    }
    if (prefs.delivery === "fallback" && channels.length > 0) {
      fallbacks.push({ channel, destination });
      continue;
    }
    channels.push({ channel, destination });
  }
  // Wanting no channel at all is opting out of every one.
  const allOptedOut = channels.length === 0 && skipped.every((s) => s.reason.startsWith("opted out"));
  return { channels, fallbacks, skipped, allOptedOut };
}
