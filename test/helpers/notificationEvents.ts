import type { StreamRecord } from "../../src/streams/interfaces";

/**
 * notification.events records for pure tests of the aggregate and the
 * resend planner: one notification ("n1", entity "ada"), positions and
 * times increasing one second per event.
 */
let position = 0;
/** The time before the first event: event n is recorded n seconds after it. */
export const at = new Date("2026-11-26T10:00:00.000Z");

export function event(type: string, payload: unknown): StreamRecord {
  position += 1;
  return {
    stream: "notification.events",
    position,
    id: "n1",
    type,
    payload,
    tags: {},
    causedBy: null,
    recordedAt: new Date(at.getTime() + position * 1000),
    recordedBy: "x",
    txId: String(position),
    feedKey: String(position),
  };
}

export const requested = (tags: Record<string, string> = {}) =>
  event("SendNotificationRequestedEvent", {
    entityId: "ada",
    subject: "Hi",
    channelsRequested: null,
    tags,
    clientOperation: { stream: "notification.client_operations", position: 1 },
  });

/** Prepared on email (a@x.test) and Slack (`slackDestination`). */
export const prepared = (slackDestination: string) =>
  event("PreparedToSendOnAllChannelsEvent", {
    entityId: "ada",
    entityName: "Ada",
    entityVersion: 1,
    skipped: [],
    prepared: [
      { channel: "email", operationId: "n1:email", stream: "email.operations", destination: "a@x.test" },
      { channel: "slack", operationId: "n1:slack", stream: "slack.operations", destination: slackDestination },
    ],
  });
