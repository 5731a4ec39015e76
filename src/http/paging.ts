import { z } from "zod";

/**
 * Paging parts shared by the lists added after the notification list
 * (webhooks, entities): `limit` as a query string, and an opaque `after`
 * cursor holding a stream position (`next` of the previous page).
 */
export const limitParam = (max: number, fallback: number) =>
  z
    .string()
    .regex(/^\d{1,9}$/, `must be a whole number from 1 to ${max}`)
    .transform(Number)
    .pipe(z.number().min(1, "must be at least 1").max(max, `must be at most ${max}`))
    .optional()
    .transform((v) => v ?? fallback)
    .describe(`a whole number from 1 to ${max}; default ${fallback}`);

/** A cursor `<prefix>1:<position>` in base64url: opaque to clients, refused when it is not one this list answered. */
export function positionCursor(prefix: string) {
  const pattern = new RegExp(`^${prefix}1:(\\d{1,16})$`);
  return {
    encode: (position: number) => Buffer.from(`${prefix}1:${position}`, "utf8").toString("base64url"),
    param: z
      .string()
      .max(100)
      .transform((text, ctx): number => {
        const match = pattern.exec(Buffer.from(text, "base64url").toString("utf8"));
        if (!match) {
          ctx.addIssue({ code: "custom", message: "not a cursor this list returned (use `next` of the previous page)" });
          return z.NEVER;
        }
        return Number(match[1]);
      })
      .describe("`next` of the previous page; omit for the first page"),
  };
}
