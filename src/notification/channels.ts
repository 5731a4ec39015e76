import type { ChannelDescriptor } from "../channels/channel";
import { emailChannel } from "../email/email.channel";
import type { Channel } from "../entities/entity.schemas";
import { slackChannel } from "../slack/slack.channel";

/** Every channel tidings sends on: registering a channel here is all the notification subsystem needs. */
export const channels: Readonly<Record<Channel, ChannelDescriptor>> = {
  email: emailChannel,
  slack: slackChannel,
};

export const allChannels: readonly ChannelDescriptor[] = Object.values(channels);

export function channelOf(name: Channel): ChannelDescriptor {
  return channels[name];
}

/** The channel whose operation or event stream this is, if any. */
export function channelOfStream(stream: string): ChannelDescriptor | undefined {
  return allChannels.find((c) => c.streams.operations === stream || c.streams.events === stream);
}
