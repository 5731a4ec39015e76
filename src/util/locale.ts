import { z } from "zod";

/**
 * A BCP 47 language tag as entities carry it and templates name their
 * variants: `en`, `fr`, `pt-BR`, `zh-Hant-TW` (compared as written).
 */
export const localeTag = z
  .string()
  .max(35)
  .regex(/^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$/, "must be a language tag like en, fr or pt-BR");
