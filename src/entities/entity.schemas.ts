import { z } from "zod";
import { localeTag } from "../util/locale";
import { slackDestination } from "../slack/slack.schemas";

export const CHANNELS = ["email", "slack"] as const;
export const Channel = z.enum(CHANNELS);
export type Channel = z.infer<typeof Channel>;

export const entityId = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9][A-Za-z0-9._:@-]*$/, "must start with a letter or digit and contain only letters, digits and . _ : @ -");

const uniqueChannels = z
  .array(Channel)
  .max(CHANNELS.length)
  .refine((list) => new Set(list).size === list.length, "must not repeat a channel");

/** A notification's category (`security`, `billing`, `marketing`): what entities set preferences for. */
export const categoryKey = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z][a-z0-9_-]*$/, "must start with a lower-case letter and contain only lower-case letters, digits, _ and -");

/**
 * An entity's preferences for one category, over its defaults: the channels
 * it wants for that category (most preferred first), and those it opted out
 * of for it, or `"all"` to receive nothing of the category. A critical
 * category (CRITICAL_CATEGORIES) ignores every opt-out.
 */
export const CategoryPreferences = z.strictObject({
  channels: uniqueChannels.optional(),
  optedOut: z.union([z.literal("all"), uniqueChannels]).optional(),
});
export type CategoryPreferences = z.infer<typeof CategoryPreferences>;

/**
 * Channel preferences: the channels the entity wants, most preferred first;
 * the channels it opted out of (they win even over a client's override);
 * and how to deliver: on every wanted channel (`all`), on the first usable
 * one only (`first`), or on the first and, when it fails for good, on the
 * next one, and so on (`fallback`).
 */
export const Preferences = z.strictObject({
  channels: uniqueChannels,
  optedOut: uniqueChannels.default([]),
  delivery: z.enum(["all", "first", "fallback"]).default("all"),
  /** Per category, preferences that override the ones above (absent: none). */
  categories: z
    .record(categoryKey, CategoryPreferences)
    .refine((c) => Object.keys(c).length <= 100, "at most 100 categories")
    .optional(),
});
export type Preferences = z.infer<typeof Preferences>;

/** An entity as its owner describes it (PUT body). */
export const EntityInput = z.strictObject({
  kind: z.enum(["user", "team", "service"]),
  name: z.string().min(1).max(200),
  email: z.email().max(320).nullable().default(null),
  slack: slackDestination.nullable().default(null),
  preferences: Preferences,
  /** The entity's language (BCP 47): which variant of a template it gets, falling back to the template's default. Absent: none. */
  locale: localeTag.optional(),
});
export type EntityInput = z.infer<typeof EntityInput>;

export const Entity = EntityInput.extend({ id: entityId });
export type Entity = z.infer<typeof Entity>;

/**
 * entity.events records (id = entity id). Each change carries the whole
 * entity as it is after the change, so "what did entity X allow at 14:02?"
 * is the latest event recorded at or before 14:02, and the current entity is
 * the latest event.
 */
export const EntityChangedEvent = z.strictObject({
  entity: Entity,
  /** Which top-level fields changed (all of them for a new entity). */
  changed: z.array(z.string()),
  changedBy: z.string().min(1).max(200),
});
export type EntityChangedEvent = z.infer<typeof EntityChangedEvent>;

export const EntityRemovedEvent = z.strictObject({
  entityId,
  removedBy: z.string().min(1).max(200),
});

export const EntityRecordTypes = {
  EntityChangedEvent: "EntityChangedEvent",
  EntityRemovedEvent: "EntityRemovedEvent",
} as const;
