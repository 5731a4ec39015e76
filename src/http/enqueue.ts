import { createHash } from "node:crypto";
import { sql } from "kysely";
import type { z } from "zod";
import type { ApiPrincipal } from "../auth/apiKeys";
import { asActor, inTransaction, type Db, type Tx } from "../db/database";
import type { Logger } from "../logging/logger";
import { UnknownEntityError, UnprocessableError } from "../errors/errors";
import { clientOperation, prepareClientOperations, unknownEntities } from "../notification/enqueue";
import type { OneRecipientRequest, SendNotificationToEntityOp } from "../notification/notification.schemas";
import { newTrackingId } from "../notification/ids";
import { append } from "../streams/append";
import type { NewRecord } from "../streams/interfaces";
import { Streams } from "../notification/streams";
import { canonicalJson } from "../util/json";
import { IdempotencyKeyReusedError } from "./problem";
import type { SendNotificationBody } from "./schemas";

export type SendNotification = z.output<typeof SendNotificationBody>;

export function requestHash(op: SendNotification): Buffer {
  return createHash("sha256").update(canonicalJson(op)).digest();
}

export interface EnqueueAnswer {
  id: string;
  /** false when an earlier request with the same idempotency key already enqueued it. */
  created: boolean;
}

interface Waiting {
  op: OneRecipientRequest;
  idempotencyKey: string | undefined;
  principal: ApiPrincipal | null;
  resolve(answer: EnqueueAnswer): void;
  reject(error: unknown): void;
}

/**
 * Enqueue for `POST /v1/notifications`, as the client actor, with group
 * commit. Requests that arrive while
 * earlier ones are being committed wait and are then committed together: one
 * transaction, one insert of their idempotency keys, one append of their
 * client operations, one commit (one WAL flush) for all. Durability is the
 * same as one transaction each: nobody is answered before the commit that
 * holds their notification. An idle server commits a lone request at once.
 * If the shared transaction fails, each request is retried alone, so one bad
 * request gets its own error and cannot fail the others.
 */
export class EnqueueBatcher {
  private waiting: Waiting[] = [];
  private running = 0;

  constructor(
    private readonly db: Db,
    private readonly options: { maxBatch: number; parallel: number; logger?: Logger } = { maxBatch: 200, parallel: 2 },
  ) {}

  enqueue(op: OneRecipientRequest, idempotencyKey: string | undefined, principal: ApiPrincipal | null): Promise<EnqueueAnswer> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ op, idempotencyKey, principal, resolve, reject });
      this.flush();
    });
  }

  private flush(): void {
    while (this.running < this.options.parallel && this.waiting.length > 0) {
      const batch = this.waiting.splice(0, this.options.maxBatch);
      this.running += 1;
      void this.commit(batch).finally(() => {
        this.running -= 1;
        this.flush();
      });
    }
  }

  private async commit(batch: Waiting[]): Promise<void> {
    let answers: Array<EnqueueAnswer | Error>;
    try {
      answers = await this.together(batch);
    } catch (error) {
      // Retrying alone is safe only if the shared transaction certainly rolled
      // back; after a lost connection it may have committed, and a request
      // without an idempotency key would then be enqueued twice.
      if (batch.length === 1 || !certainlyRolledBack(error)) return batch.forEach((w) => w.reject(error));
      this.options.logger?.warn({ err: error, requests: batch.length }, "shared enqueue failed; committing each request alone");
      await Promise.all(batch.map((w) => this.commit([w])));
      return;
    }
    batch.forEach((w, i) => {
      const answer = answers[i]!;
      if (answer instanceof Error) w.reject(answer);
      else w.resolve(answer);
    });
  }

  private together(batch: Waiting[]): Promise<Array<EnqueueAnswer | Error>> {
    // As the service first (it keeps the idempotency keys), then as the client actor.
    return inTransaction(this.db, null, (tx) => enqueueTogether(tx, batch));
  }
}

/** Whose an idempotency key is: the API key's (docs/api.md). */
export function idempotencyScope(principal: ApiPrincipal | null): string {
  return `api:${principal?.keyId ?? "none"}`;
}

/**
 * The batch's requests in one transaction; an answer or an error per
 * request, in order. With an idempotency key, the key is recorded (as the
 * service) in the same transaction as the client operation (appended as the
 * client actor); its primary key makes a concurrent duplicate wait for the
 * first transaction and then find its row. Keys belong to the API key that
 * used them. Requests are compared as validated (defaults applied, key order
 * ignored).
 */
async function enqueueTogether(tx: Tx, batch: Waiting[]): Promise<Array<EnqueueAnswer | Error>> {
  const answers: Array<EnqueueAnswer | Error | undefined> = new Array<EnqueueAnswer | Error | undefined>(batch.length);

  // Random, whether or not the request has a key (a key's is kept with it): nobody can know one in advance.
  // Made first: a template may name the notification's id.
  const trackingIds = batch.map(() => newTrackingId());

  // A request for an entity that does not exist, or whose template cannot be
  // rendered for it, is refused before anything of it is stored (its
  // idempotency key included). A replay of a request accepted before is
  // still a replay: requests whose key was used already go on to be
  // answered by it.
  const refusals: Array<Error | undefined> = new Array<Error | undefined>(batch.length);
  const unknown = new Set(await unknownEntities(tx, [...new Set(batch.map((w) => w.op.entityId))]));
  batch.forEach((w, i) => {
    if (unknown.has(w.op.entityId)) refusals[i] = new UnknownEntityError(w.op.entityId);
  });
  const candidates = batch.map((w, i) => ({ w, i })).filter(({ i }) => refusals[i] === undefined);
  const prepared = await prepareClientOperations(
    tx,
    candidates.map(({ w, i }) => ({ request: w.op, trackingId: trackingIds[i]!, idempotencyKey: w.idempotencyKey })),
  );
  const ops: Array<SendNotificationToEntityOp | undefined> = new Array<SendNotificationToEntityOp | undefined>(batch.length);
  candidates.forEach(({ i }, k) => {
    const result = prepared[k]!;
    if (result instanceof Error) refusals[i] = result;
    else ops[i] = result;
  });
  const keyedRefusals = batch.filter((w, i) => refusals[i] !== undefined && w.idempotencyKey !== undefined);
  if (keyedRefusals.length > 0) {
    const { rows } = await sql<{ scope: string; key: string }>`
      select i.scope, i.key from api.idempotency_keys i
      join unnest(${keyedRefusals.map((w) => idempotencyScope(w.principal))}::text[], ${keyedRefusals.map((w) => w.idempotencyKey!)}::text[]) as w(scope, key)
        on i.scope = w.scope and i.key = w.key`.execute(tx);
    const used = new Set(rows.map((r) => JSON.stringify([r.scope, r.key])));
    batch.forEach((w, i) => {
      if (refusals[i] !== undefined && used.has(JSON.stringify([idempotencyScope(w.principal), w.idempotencyKey]))) refusals[i] = undefined;
    });
  }
  batch.forEach((_w, i) => {
    if (refusals[i] !== undefined) answers[i] = refusals[i];
  });
  const live = (i: number) => answers[i] === undefined;

  // Idempotency keys: the first request with a (scope, key) in this batch
  // claims it (unless an earlier transaction did); any other with the same
  // one is answered like a repeat, or refused if its body differs.
  const scoped = (w: Waiting) => (w.idempotencyKey === undefined ? undefined : JSON.stringify([idempotencyScope(w.principal), w.idempotencyKey]));
  const firstWithKey = new Map<string, number>();
  batch.forEach((w, i) => {
    const k = scoped(w);
    if (k !== undefined && live(i) && !firstWithKey.has(k)) firstWithKey.set(k, i);
  });
  const hashes = batch.map((w) => (w.idempotencyKey === undefined ? null : requestHash(w.op)));
  const claimed = new Set<string>();
  if (firstWithKey.size > 0) {
    // Sorted: two shared commits inserting the same keys take their locks in one order.
    const keys = [...firstWithKey.keys()].sort();
    const firsts = keys.map((k) => firstWithKey.get(k)!);
    const scopes = firsts.map((i) => idempotencyScope(batch[i]!.principal));
    const names = firsts.map((i) => batch[i]!.idempotencyKey!);
    const { rows } = await sql<{ scope: string; key: string }>`
      insert into api.idempotency_keys (scope, key, request_sha256, tracking_id, api_key_id)
      select * from unnest(${scopes}::text[], ${names}::text[], ${firsts.map((i) => hashes[i]!)}::bytea[],
                           ${firsts.map((i) => trackingIds[i]!)}::text[], ${firsts.map((i) => batch[i]!.principal?.keyId ?? null)}::uuid[])
      on conflict (scope, key) do nothing
      returning scope, key`.execute(tx);
    for (const r of rows) claimed.add(JSON.stringify([r.scope, r.key]));
    const known = new Map<string, { request_sha256: Buffer; tracking_id: string }>();
    const elsewhere = keys.filter((k) => !claimed.has(k)).map((k) => JSON.parse(k) as [string, string]);
    if (elsewhere.length > 0) {
      const { rows: found } = await sql<{ scope: string; key: string; request_sha256: Buffer; tracking_id: string }>`
        select i.scope, i.key, i.request_sha256, i.tracking_id
        from api.idempotency_keys i
        join unnest(${elsewhere.map((e) => e[0])}::text[], ${elsewhere.map((e) => e[1])}::text[]) as w(scope, key)
          on i.scope = w.scope and i.key = w.key`.execute(tx);
      for (const f of found) known.set(JSON.stringify([f.scope, f.key]), f);
    }
    batch.forEach((w, i) => {
      const k = scoped(w);
      if (k === undefined || !live(i)) return;
      const original =
        claimed.has(k) && firstWithKey.get(k) !== i ? { request_sha256: hashes[firstWithKey.get(k)!]!, tracking_id: trackingIds[firstWithKey.get(k)!]! } : known.get(k);
      if (!original) return; // claimed by this request: enqueued below
      answers[i] = original.request_sha256.equals(hashes[i]!)
        ? { id: original.tracking_id, created: false }
        : new IdempotencyKeyReusedError(w.idempotencyKey!, original.tracking_id);
    });
  }

  // One append for every request still to enqueue, as the client actor.
  const fresh: Array<{ index: number; record: NewRecord }> = [];
  batch.forEach((w, i) => {
    if (answers[i] !== undefined) return;
    // Prepared above (a replay whose first request was refused now has none, and was answered by its key).
    const op = ops[i];
    if (op === undefined) return;
    fresh.push({ index: i, record: clientOperation(op, trackingIds[i]!) });
  });
  const written = zip(
    fresh,
    await asActor(tx, "client", () =>
      append(
        tx,
        Streams.notificationClientOperations,
        fresh.map((f) => f.record),
        "write_always",
      ),
    ),
  );
  for (const { index, record, result } of written) answers[index] = { id: record.id, created: result.written };
  return answers.map((a) => a ?? new Error("request left unanswered by the batch"));
}

function zip<T, R>(items: T[], results: R[]): Array<T & { result: R }> {
  return items.map((item, i) => ({ ...item, result: results[i]! }));
}

/**
 * Whether an error means the transaction did not commit: PostgreSQL answered
 * with an error (other than a lost or terminated connection), or our own code
 * threw before committing. A connection that failed with no answer may have
 * committed.
 */
function certainlyRolledBack(error: unknown): boolean {
  for (let e: unknown = error; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code)) return !code.startsWith("08") && !code.startsWith("57P");
    if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return false;
    if (/connection terminated|connection ended|not queryable/i.test(e.message)) return false;
  }
  return true;
}

export interface ManyAnswer {
  /** One notification per entity, in the order of the request's `entityIds`. */
  notifications: Array<{ entityId: string; id: string }>;
  /** false when an earlier request with the same idempotency key already enqueued them. */
  created: boolean;
}

/**
 * Enqueue a request to many entities (`entityIds`) in one transaction of its
 * own: one client operation and tracking id per entity, all or nothing. An
 * unknown entity or a template that cannot be rendered for one of them
 * refuses the whole request (422 naming it), and nothing is stored. One
 * idempotency key covers the request: its row keeps every tracking id
 * (`tracking_ids`, in the order of `entityIds`), so a repeat answers the
 * same list without enqueueing again.
 */
export async function enqueueToMany(db: Db, request: SendNotification, idempotencyKey: string | undefined, principal: ApiPrincipal | null): Promise<ManyAnswer> {
  const entityIds = request.entityIds!;
  const { entityIds: _all, entityId: _one, ...shared } = request;
  return inTransaction(db, null, async (tx) => {
    const trackingIds = entityIds.map(() => newTrackingId());
    if (idempotencyKey !== undefined) {
      const hash = requestHash(request);
      const scope = idempotencyScope(principal);
      const { rows: claimed } = await sql<{ key: string }>`
        insert into api.idempotency_keys (scope, key, request_sha256, tracking_id, api_key_id, tracking_ids)
        values (${scope}, ${idempotencyKey}, ${hash}, ${trackingIds[0]!}, ${principal?.keyId ?? null}, ${trackingIds}::text[])
        on conflict (scope, key) do nothing
        returning key`.execute(tx);
      if (claimed.length === 0) {
        const { rows } = await sql<{ request_sha256: Buffer; tracking_id: string; tracking_ids: string[] | null }>`
          select request_sha256, tracking_id, tracking_ids from api.idempotency_keys where scope = ${scope} and key = ${idempotencyKey}`.execute(tx);
        const original = rows[0]!;
        if (!original.request_sha256.equals(hash) || original.tracking_ids === null) throw new IdempotencyKeyReusedError(idempotencyKey, original.tracking_id);
        return { notifications: entityIds.map((entityId, i) => ({ entityId, id: original.tracking_ids![i]! })), created: false };
      }
    }
    const unknown = await unknownEntities(tx, entityIds);
    if (unknown.length > 0) {
      throw unknown.length === 1
        ? new UnknownEntityError(unknown[0]!)
        : new UnprocessableError(`unknown entities ${unknown.map((u) => `"${u}"`).join(", ")}: create them first; nothing was enqueued`);
    }
    const prepared = await prepareClientOperations(
      tx,
      entityIds.map((entityId, i) => ({ request: { ...shared, entityId }, trackingId: trackingIds[i]!, idempotencyKey })),
    );
    const refused = prepared.findIndex((p) => p instanceof Error);
    if (refused >= 0) {
      const error = prepared[refused] as Error;
      throw new UnprocessableError(`entity "${entityIds[refused]}": ${error.message}; nothing was enqueued`, { cause: error });
    }
    await asActor(tx, "client", () =>
      append(
        tx,
        Streams.notificationClientOperations,
        prepared.map((op, i) => clientOperation(op as SendNotificationToEntityOp, trackingIds[i]!)),
        "write_always",
      ),
    );
    return { notifications: entityIds.map((entityId, i) => ({ entityId, id: trackingIds[i]! })), created: true };
  });
}
