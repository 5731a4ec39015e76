/** The entities' stream (declared in migrations/0002_notification.sql): every change to an entity, its current state folded from it. */
export const EntityStreams = {
  events: "entity.events",
} as const;
