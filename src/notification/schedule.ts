import { inTransaction, type Db } from "../db/database";
import { ConflictError, NotFoundError } from "../errors/errors";
import { append } from "../streams/append";
import { findRecords, getLatestById } from "../streams/read";
import { NotificationEventTypes, SendNotificationToEntityOp } from "./notification.schemas";
import { notificationEvent, requestedEvent } from "./notification.bot";
import { Streams } from "./streams";
import { lockNotification } from "./locks";

/**
 * Scheduled notifications (`sendAt`): the client operation's job runs at
 * its time (migrations/0006_templates.sql); before then, a cancel ends the
 * notification as cancelled. The notification bot and a cancel take the
 * notification's lock, so exactly one of them goes first: either the bot
 * handles it (and a cancel is too late: 409) or the cancel is recorded (and
 * the bot sends nothing).
 */

/**
 * Cancel a scheduled notification before it is sent, as the scheduler: its
 * creation event and NotificationCancelledEvent (the outcome, status
 * `cancelled`, no alert). Once the notification bot has handled it, or for a
 * notification that was not scheduled, a ConflictError (409).
 */
export async function cancelScheduledNotification(db: Db, id: string, cancelledBy: string): Promise<{ sendAt: string }> {
  return inTransaction(db, "scheduler", async (tx) => {
    await lockNotification(tx, id);
    const record = await getLatestById(tx, Streams.notificationClientOperations, id);
    if (!record) throw new NotFoundError(`no notification with id ${id}`);
    const op = SendNotificationToEntityOp.parse(record.payload);
    if (op.sendAt === undefined) throw new ConflictError(`notification ${id} was not scheduled (no sendAt): it is sent at once and cannot be cancelled`);
    const events = await findRecords(tx, Streams.notificationEvents, {
      ids: [id],
      types: [NotificationEventTypes.NotificationCancelledEvent, NotificationEventTypes.SendNotificationRequestedEvent],
    });
    if (events.some((e) => e.type === NotificationEventTypes.NotificationCancelledEvent)) throw new ConflictError(`notification ${id} is already cancelled`);
    if (events.length > 0) throw new ConflictError(`notification ${id} was already sent (scheduled for ${op.sendAt}): too late to cancel`);
    await append(tx, Streams.notificationEvents, [
      requestedEvent(record),
      notificationEvent(record, NotificationEventTypes.NotificationCancelledEvent, { cancelledBy, sendAt: op.sendAt }),
    ]);
    return { sendAt: op.sendAt };
  });
}
