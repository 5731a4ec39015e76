/** The entities' stream (declared in migrations/0002_notification.sql): every change to an entity, its current state folded from it. */
export const EntityStreams = {
  events: "entity.events",
  /** Erasures of an entity's personal data (migrations/0004_erasure.sql): who, when, why. Written by entity.erase_entity only. */
  erasures: "entity.erasures",
} as const;
