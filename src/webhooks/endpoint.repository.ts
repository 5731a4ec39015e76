import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import { inTransaction, type Db, type Executor } from "../db/database";
import { NotFoundError, ValidationError } from "../errors/errors";
import { appendOne } from "../streams/append";
import { streamTable } from "../streams/names";
import { checkEndpointUrl, type AddressPolicy } from "./address";
import { WebhookEndpointRegisteredEvent, WebhookEndpointRemovedEvent, WebhookRecordTypes, type WebhookEventType } from "./webhook.schemas";
import { WebhookStreams } from "./webhook.streams";

export type EndpointStatus = "active" | "disabled" | "removed";

export interface WebhookEndpoint {
  id: string;
  url: string;
  /** Subscribed event types; null: every one. */
  events: WebhookEventType[] | null;
  description: string | null;
  status: EndpointStatus;
  /** Why it was disabled (after failing deliveries), if it was. */
  disabledReason: string | null;
  registeredAt: Date;
  registeredBy: string;
  /** Where its registration is in webhook.endpoints: the list's order. */
  position: number;
}

const BASE62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function newEndpointId(): string {
  // 24 base62 characters: about 143 bits, unguessable.
  const bytes = randomBytes(24);
  return "wh_" + Array.from(bytes, (b) => BASE62[b % 62]).join("");
}

/** A signing secret as Standard Webhooks writes one: `whsec_` and 32 random bytes in base64. */
export function newSigningSecret(): string {
  return "whsec_" + randomBytes(32).toString("base64");
}

interface EndpointRow {
  id: string;
  position: number;
  payload: unknown;
  recorded_at: Date;
  removed: boolean;
  disabled_reason: string | null;
}

/** Every endpoint's registration with what became of it, in one query (the stream is small: one to three records per endpoint). */
function endpointsQuery(where: ReturnType<typeof sql>) {
  return sql<EndpointRow>`
    select r.id, r.position, r.payload, r.recorded_at,
           exists (select 1 from ${streamTable(WebhookStreams.endpoints)} x where x.id = r.id and x.type = ${WebhookRecordTypes.WebhookEndpointRemovedEvent}) as removed,
           (select d.payload->>'reason' from ${streamTable(WebhookStreams.endpoints)} d
             where d.id = r.id and d.type = ${WebhookRecordTypes.WebhookEndpointDisabledEvent} order by d.position limit 1) as disabled_reason
    from ${streamTable(WebhookStreams.endpoints)} r
    where r.type = ${WebhookRecordTypes.WebhookEndpointRegisteredEvent} and ${where}
    order by r.position`;
}

function toEndpoint(row: EndpointRow): WebhookEndpoint {
  const reg = WebhookEndpointRegisteredEvent.parse(row.payload);
  return {
    id: row.id,
    url: reg.url,
    events: reg.events,
    description: reg.description,
    status: row.removed ? "removed" : row.disabled_reason !== null ? "disabled" : "active",
    disabledReason: row.disabled_reason,
    registeredAt: row.recorded_at,
    registeredBy: reg.registeredBy,
    position: row.position,
  };
}

export interface RegisterInput {
  url: string;
  events?: WebhookEventType[] | undefined;
  description?: string | undefined;
}

/**
 * Record a new endpoint and its signing secret, in one transaction. The
 * secret is answered here, once: the admin role may write it but not read it
 * back (migrations/0007_webhooks.sql).
 */
export async function registerEndpoint(db: Db, input: RegisterInput, registeredBy: string, policy: AddressPolicy): Promise<{ endpoint: WebhookEndpoint; secret: string }> {
  const url = checkEndpointUrl(input.url, policy);
  const events = input.events && input.events.length > 0 ? [...new Set(input.events)] : null;
  const id = newEndpointId();
  const secret = newSigningSecret();
  const payload = WebhookEndpointRegisteredEvent.parse({ url, events, description: input.description ?? null, registeredBy });
  return inTransaction(db, "webhook_admin", async (tx) => {
    const appended = await appendOne(tx, WebhookStreams.endpoints, { id, type: WebhookRecordTypes.WebhookEndpointRegisteredEvent, payload });
    await sql`insert into webhook.signing_secrets (endpoint_id, secret) values (${id}, ${secret})`.execute(tx);
    const { rows } = await sql<{ recorded_at: Date }>`select now() as recorded_at`.execute(tx);
    return {
      endpoint: {
        id,
        url,
        events,
        description: payload.description,
        status: "active",
        disabledReason: null,
        registeredAt: rows[0]!.recorded_at,
        registeredBy,
        position: appended.position,
      },
      secret,
    };
  });
}

/** An endpoint as it is now (removed ones included, with that status), or null. */
export async function getEndpoint(db: Executor, id: string): Promise<WebhookEndpoint | null> {
  const { rows } = await endpointsQuery(sql`r.id = ${id}`).execute(db);
  return rows[0] ? toEndpoint(rows[0]) : null;
}

/** Endpoints not removed, in registration order, a page after `afterPosition`. */
export async function listEndpoints(db: Executor, page: { afterPosition?: number | undefined; limit: number }): Promise<{ items: WebhookEndpoint[]; next: number | null }> {
  const { rows } = await sql<EndpointRow>`
    select * from (${endpointsQuery(sql`r.position > ${page.afterPosition ?? 0}`)}) e
    where not e.removed order by e.position limit ${page.limit + 1}`.execute(db);
  const items = rows.slice(0, page.limit).map(toEndpoint);
  return { items, next: rows.length > page.limit ? items[items.length - 1]!.position : null };
}

/** Endpoints that take deliveries now: registered, neither removed nor disabled. */
export async function activeEndpoints(db: Executor): Promise<WebhookEndpoint[]> {
  const { rows } = await endpointsQuery(sql`true`).execute(db);
  return rows.map(toEndpoint).filter((e) => e.status === "active");
}

/** Stop delivering to an endpoint: a removal record. Unknown or already removed: 404. */
export async function removeEndpoint(db: Db, id: string, removedBy: string): Promise<void> {
  await inTransaction(db, "webhook_admin", async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended(${`webhook endpoint ${id}`}, 0))`.execute(tx);
    const endpoint = await getEndpoint(tx, id);
    if (!endpoint || endpoint.status === "removed") throw new NotFoundError(`no webhook endpoint with id "${id}"`);
    await appendOne(tx, WebhookStreams.endpoints, {
      id,
      type: WebhookRecordTypes.WebhookEndpointRemovedEvent,
      payload: WebhookEndpointRemovedEvent.parse({ removedBy }),
    });
  });
}

/** The signing secret of an endpoint (the webhook bot's alone to read). */
export async function signingSecret(db: Executor, id: string): Promise<string> {
  const { rows } = await sql<{ secret: string }>`select secret from webhook.signing_secrets where endpoint_id = ${id}`.execute(db);
  if (!rows[0]) throw new ValidationError(`webhook endpoint ${id} has no signing secret`);
  return rows[0].secret;
}
