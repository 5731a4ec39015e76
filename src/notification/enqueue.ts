import { sql } from "kysely";
import { asActor, inTransaction, type Db, type Tx } from "../db/database";
import { ConflictError, PgCodes, UnknownEntityError, UnprocessableError, ValidationError, pgCode } from "../errors/errors";
import { appendOne } from "../streams/append";
import type { NewRecord } from "../streams/interfaces";
import { Streams } from "./streams";
import { newTrackingId } from "./ids";
import { NotificationRecordTypes, SendNotificationToEntityOp, normalizeSendAt, type OneRecipientRequest } from "./notification.schemas";
import { getEntities, type EntityVersion } from "../entities/entity.repository";
import { getCurrentTemplates, type TemplateVersion } from "../templates/template.repository";
import { renderTemplate, UnknownTemplateError } from "../templates/render";

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
 * notification exists if and only if the caller commits. An idempotency key
 * is the calling login's own (the same as with the SQL function): a repeat
 * returns the notification it made, another request under it is refused.
 */
export async function enqueueNotificationInTransaction(tx: Tx, input: unknown): Promise<Enqueued> {
  const op = parseSendNotification(input);
  return asActor(tx, "client", async () => {
    const [unknown] = await unknownEntities(tx, [op.entityId]);
    if (unknown !== undefined) throw new UnknownEntityError(unknown);
    let trackingId = newTrackingId();
    if (op.idempotencyKey !== undefined) {
      const claimed = await claimIdempotencyKey(tx, op);
      if (!claimed.created) return { trackingId: claimed.trackingId, created: false, position: claimed.position };
      trackingId = claimed.trackingId;
    }
    const result = await appendOne(tx, Streams.notificationClientOperations, clientOperation(op, trackingId));
    return { trackingId, created: result.written, position: result.position };
  });
}

async function claimIdempotencyKey(tx: Tx, op: SendNotificationToEntityOp): Promise<{ trackingId: string; created: boolean; position: number }> {
  try {
    const { rows } = await sql<{ tracking_id: string; created: boolean; position: number | null }>`
      select c.tracking_id, c.created,
             case when not c.created then tidings.existing_position('notification.client_operations', c.tracking_id) end as position
      from api.claim_idempotency_key(${op.idempotencyKey!}, ${JSON.stringify(op)}::jsonb) c`.execute(tx);
    const row = rows[0]!;
    return { trackingId: row.tracking_id, created: row.created, position: row.position ?? 0 };
  } catch (error) {
    if (pgCode(error) === PgCodes.idempotencyKeyReused) throw new ConflictError((error as Error).message, { cause: error });
    throw error;
  }
}

/** Of these entity ids, those that do not exist now (never created, or removed). */
export async function unknownEntities(tx: Tx, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const { rows } = await sql<{ unknown: string[] }>`select api.unknown_entities(${[...ids]}::text[]) as unknown`.execute(tx);
  return rows[0]!.unknown;
}

/** The client operation record of a validated request under its tracking id. */
export function clientOperation(op: SendNotificationToEntityOp, trackingId: string): NewRecord<SendNotificationToEntityOp> {
  return { id: trackingId, type: NotificationRecordTypes.SendNotificationToEntityOp, payload: op, tags: op.tags };
}

/** Enqueue a notification in a transaction of its own. */
export async function enqueueNotification(db: Db, input: unknown): Promise<Enqueued> {
  return inTransaction(db, null, (tx) => enqueueNotificationInTransaction(tx, input));
}

/**
 * The client operations of validated requests, each under its tracking id:
 * raw content as it came; a template's current version rendered for its
 * entity (the locale variant, `data`, `entity`, `notification`), so the
 * operation holds what will be sent and names the version. Per request, the
 * operation or the error that refuses it (an unknown template, a missing
 * variable: 422), so one bad request does not refuse the others. Templates
 * and entities are read as the reader actor, in one query each.
 */
export async function prepareClientOperations(
  tx: Tx,
  requests: ReadonlyArray<{ request: OneRecipientRequest; trackingId: string; idempotencyKey?: string | undefined }>,
): Promise<Array<SendNotificationToEntityOp | Error>> {
  const templated = requests.filter((r) => r.request.template !== undefined);
  const [templates, entities]: [Map<string, TemplateVersion>, Map<string, EntityVersion>] =
    templated.length === 0
      ? [new Map<string, TemplateVersion>(), new Map<string, EntityVersion>()]
      : await asActor(tx, "reader", () =>
          Promise.all([getCurrentTemplates(tx, [...new Set(templated.map((r) => r.request.template!))]), getEntities(tx, [...new Set(templated.map((r) => r.request.entityId))])]),
        );
  // A delay counts from now on the database's clock, which reads ISO 8601 durations itself ('PT15M'::interval).
  const delays = [...new Set(requests.map((r) => r.request.delay).filter((d): d is string => d !== undefined))];
  const sendAfter = new Map<string, string>();
  if (delays.length > 0) {
    const { rows } = await sql<{ delay: string; at: Date }>`
      select d.delay, now() + d.delay::interval as at from unnest(${delays}::text[]) as d(delay)`.execute(tx);
    for (const row of rows) sendAfter.set(row.delay, row.at.toISOString());
  }
  return requests.map(({ request: { delay, sendAt: at, ...request }, trackingId, idempotencyKey }) => {
    try {
      const { template: key, data, ...raw } = request;
      const sendAt = at !== undefined ? normalizeSendAt(at) : delay !== undefined ? sendAfter.get(delay) : undefined;
      const withKey = { ...(idempotencyKey === undefined ? {} : { idempotencyKey }), ...(sendAt === undefined ? {} : { sendAt }) };
      if (key === undefined) return parseSendNotification({ ...raw, ...withKey });
      const version = templates.get(key);
      if (!version) return new UnknownTemplateError(key);
      const entity = entities.get(request.entityId)?.entity;
      if (!entity) return new UnknownEntityError(request.entityId);
      const rendered = renderTemplate(key, version.template, {
        data: data ?? {},
        entity: { id: entity.id, name: entity.name, locale: entity.locale ?? null },
        notification: { id: trackingId },
      });
      const op = SendNotificationToEntityOp.safeParse({
        entityId: request.entityId,
        ...rendered.email,
        ...(rendered.slack ? { slack: { mrkdwn: rendered.slack.text, ...(rendered.slack.blocks ? { blocks: rendered.slack.blocks } : {}) } } : {}),
        ...(request.channels ? { channels: request.channels } : {}),
        ...(request.category !== undefined ? { category: request.category } : {}),
        tags: request.tags,
        ...withKey,
        template: { key, version: version.version, locale: rendered.locale },
        data: data ?? {},
      });
      if (!op.success) {
        const issues = op.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ");
        return new UnprocessableError(`template "${key}" version ${version.version} rendered content that cannot be sent: ${issues}`);
      }
      return op.data;
    } catch (error) {
      return error instanceof Error ? error : new Error(String(error));
    }
  });
}
