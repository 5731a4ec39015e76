import { sql } from "kysely";
import type { Db, Tx } from "../db/database";
import { ValidationError } from "../errors/errors";
import { appendOne } from "../streams/append";
import type { ExistingRecordStrategy, NewRecord } from "../streams/interfaces";
import { Streams } from "../streams/names";
import { newTrackingId, trackingIdForIdempotencyKey } from "./ids";
import { NotificationRecordTypes, SendNotificationToEntityOp } from "./notification.schemas";

export interface Enqueued {
  trackingId: string;
  /** false when an earlier request with the same idempotency key already enqueued it. */
  created: boolean;
  position: number;
}

export function parseSendNotification(input: unknown): SendNotificationToEntityOp {
  const parsed = SendNotificationToEntityOp.safeParse(input);
  if (!parsed.success) throw ValidationError.fromZod(parsed.error, "SendNotificationToEntityOp", "(body)");
  return parsed.data;
}

/**
 * Enqueue a notification inside the caller's own transaction: the client
 * operation is appended as the `client` role (then the caller's role is
 * restored), and its job is queued by the outbox trigger, so the
 * notification exists if and only if the caller commits.
 */
export async function enqueueNotificationInTransaction(tx: Tx, input: unknown): Promise<Enqueued> {
  const { record, strategy } = clientOperation(input);
  const { rows } = await sql<{ role: string }>`select current_user as role`.execute(tx);
  await sql`set local role tidings_client`.execute(tx);
  const result = await appendOne(tx, Streams.notificationClientOperations, record, strategy);
  // Restored on success only: after a failed append the transaction is
  // aborted, and a SET there would replace the real error with 25P02.
  await sql`set local role ${sql.id(rows[0]!.role)}`.execute(tx);
  return { trackingId: record.id, created: result.written, position: result.position };
}

/**
 * The client operation record for a request, validated: its tracking id is
 * derived from the idempotency key when there is one (so a repeat finds it),
 * new otherwise.
 */
export function clientOperation(input: unknown): { record: NewRecord<SendNotificationToEntityOp>; strategy: ExistingRecordStrategy } {
  const op = parseSendNotification(input);
  const trackingId = op.idempotencyKey ? trackingIdForIdempotencyKey(op.idempotencyKey) : newTrackingId();
  return {
    record: { id: trackingId, type: NotificationRecordTypes.SendNotificationToEntityOp, payload: op, tags: op.tags },
    strategy: op.idempotencyKey ? "skip_if_id_and_type_exists" : "write_always",
  };
}

/** Enqueue a notification in a transaction of its own. */
export async function enqueueNotification(db: Db, input: unknown): Promise<Enqueued> {
  return db.transaction().execute((tx) => enqueueNotificationInTransaction(tx, input));
}
