import { sql } from "kysely";
import { z } from "zod";
import { inTransaction, type Db } from "../../db/database";
import { entityId } from "../../entities/entity.schemas";
import { ConflictError, NotFoundError, PgCodes, ValidationError, pgCode } from "../../errors/errors";
import { OPERATOR, defaultActor } from "../redrive";

/**
 * Erasure of one entity's personal data (docs/security.md, "Erasure"): a
 * thin client of `entity.erase_entity` (migrations/0004_erasure.sql), which
 * does the whole erasure in one transaction, acting as the operator: its
 * names, addresses, Slack destinations, subjects and bodies become
 * placeholders in every stream, handling row, handling history row,
 * idempotency key and job, while records keep their ids, types, times and
 * statuses; the erasure itself is appended to `entity.erasures`. A dry run
 * (the default) counts what would change and what still waits.
 */

export interface EraseInput {
  entityId: string;
  /** Erase; without it nothing changes and the report says what would. */
  execute?: boolean;
  /** Why; required to execute. Kept in the erasure record. */
  reason?: string;
  /** Who; defaults to the OS user. */
  actor?: string;
}

const Place = z.object({ place: z.string(), rows: z.number().int() });
const Waiting = z.object({ stream: z.string(), position: z.number().int(), id: z.string(), type: z.string(), concern: z.string(), status: z.string() });
const Report = z.object({
  entityId: z.string(),
  executed: z.boolean(),
  notifications: z.array(z.string()),
  places: z.array(Place),
  waiting: z.array(Waiting),
  erasure: z.object({ stream: z.string(), position: z.number().int(), recordedAt: z.string() }).nullable(),
});

export type ErasurePlace = z.infer<typeof Place>;
export type WaitingRecord = z.infer<typeof Waiting>;

export interface ErasureReport {
  entityId: string;
  dryRun: boolean;
  actor: string;
  reason: string | null;
  /** Tracking ids of the entity's notifications (their content is erased, their outcome kept). */
  notifications: string[];
  /** Rows rewritten (or that would be), per place: a stream, its __handling and __handling_history, idempotency keys, jobs. */
  places: ErasurePlace[];
  /** Total rows over every place. */
  rows: number;
  /** Records still to be handled: an erasure is refused while there are any. */
  waiting: WaitingRecord[];
  /** The erasure record appended (entity.erasures), once executed. */
  erasure: { stream: string; position: number; recordedAt: string } | null;
}

export async function eraseEntity(db: Db, input: EraseInput): Promise<ErasureReport> {
  const issues: { path: string; message: string }[] = [];
  const id = entityId.safeParse(input.entityId);
  if (!id.success) issues.push({ path: "entity", message: id.error.issues[0]?.message ?? "invalid" });
  const reason = input.reason?.trim() || null;
  if (input.execute && !reason) issues.push({ path: "reason", message: "an erasure needs a reason (--reason), kept in the erasure record" });
  if (reason && reason.length > 2000) issues.push({ path: "reason", message: "at most 2000 characters" });
  const actor = (input.actor ?? defaultActor()).trim();
  if (!actor || actor.length > 200) issues.push({ path: "actor", message: "must be 1-200 characters" });
  if (issues.length > 0) throw ValidationError.fromIssues("erasure", issues);

  try {
    const raw = await inTransaction(db, OPERATOR, async (tx) => {
      const { rows } = await sql<{ report: unknown }>`
        select entity.erase_entity(${input.entityId}, ${actor}, ${reason}, ${input.execute === true}) as report`.execute(tx);
      return rows[0]!.report;
    });
    const report = Report.parse(raw);
    return {
      entityId: report.entityId,
      dryRun: !report.executed,
      actor,
      reason,
      notifications: report.notifications,
      places: report.places,
      rows: report.places.reduce((sum, p) => sum + p.rows, 0),
      waiting: report.waiting,
      erasure: report.erasure,
    };
  } catch (error) {
    const code = pgCode(error);
    const message = (error as Error).message;
    if (code === PgCodes.unknownEntity) throw new NotFoundError(message);
    if (code === PgCodes.erasureRefused) throw new ConflictError(message);
    if (code === "22023") throw new ValidationError(message);
    throw error;
  }
}
