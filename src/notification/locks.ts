import { sql } from "kysely";
import type { Tx } from "../db/database";

/**
 * A notification's transaction-scoped advisory locks: who takes turns with
 * whom on one notification, whatever module does the work.
 */

/**
 * The lock of one notification, ordering its scheduled send and a cancel
 * (src/notification/schedule.ts): either the notification bot handles it
 * first (and a cancel is too late) or the cancel is recorded first (and the
 * bot sends nothing).
 */
export async function lockNotification(tx: Tx, id: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtextextended(${`notification ${id}`}, 0))`.execute(tx);
}

/**
 * The saga's per-notification locks, in id order: whatever reads a
 * notification's saga and acts on it (an evaluation, its fallback, its
 * outcome marking the deadline handled) and whatever appends a new one (a
 * resend) take turns, so none acts on a saga another has just replaced.
 */
export async function lockSagas(tx: Tx, ids: readonly string[]): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtextextended('saga ' || id, 0)) from unnest(${[...ids].sort()}::text[]) as id order by id`.execute(tx);
}
