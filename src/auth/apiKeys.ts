import { createHash, randomBytes } from "node:crypto";
import { sql } from "kysely";
import { z } from "zod";
import type { Db, Executor } from "../db/database";
import { ConflictError, NotFoundError, ValidationError } from "../errors/errors";

/**
 * API keys: a name, scopes, and the SHA-256 of a random secret
 * (migrations/0003_api_and_audit.sql). The secret is returned once, by createApiKey, and never
 * stored. Requests send it as `Authorization: Bearer <secret>`.
 */

/**
 * The seed's access rule, as API scopes: producers only enqueue, readers only
 * read notifications, events and the feed, `entities` manages entities, and
 * admin may do everything.
 */
export const SCOPES = ["producer", "reader", "entities", "admin"] as const;
export const Scope = z.enum(SCOPES);
export type Scope = z.infer<typeof Scope>;

export const ApiKeyName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,99}$/, "must be 1-100 characters: letters, digits, space and . _ : @ / -, starting with a letter or digit");

export const ScopeList = z
  .array(Scope)
  .min(1, "at least one scope is required")
  .refine((l) => new Set(l).size === l.length, "must not repeat a scope");

/** Secrets look like `tdk_` + 43 base64url characters (32 random bytes). */
const SECRET_PREFIX = "tdk_";
const SECRET_SHAPE = /^tdk_[A-Za-z0-9_-]{43}$/;

export function generateSecret(): string {
  return SECRET_PREFIX + randomBytes(32).toString("base64url");
}

export function hashSecret(secret: string): Buffer {
  return createHash("sha256").update(secret, "utf8").digest();
}

export function looksLikeSecret(value: string): boolean {
  return SECRET_SHAPE.test(value);
}

/** Who made a request: the API key, without its secret. */
export interface ApiPrincipal {
  keyId: string;
  name: string;
  scopes: Scope[];
}

export interface ApiKeyInfo extends ApiPrincipal {
  /** The last four characters of the secret. */
  hint: string;
  createdAt: Date;
  createdBy: string;
  revokedAt: Date | null;
  revokedReason: string | null;
}

interface KeyRow {
  id: string;
  name: string;
  hint: string;
  scopes: string[];
  created_at: Date;
  created_by: string;
  revoked_at: Date | null;
  revoked_reason: string | null;
}

function toInfo(row: KeyRow): ApiKeyInfo {
  return {
    keyId: row.id,
    name: row.name,
    scopes: row.scopes as Scope[],
    hint: row.hint,
    createdAt: row.created_at,
    createdBy: row.created_by,
    revokedAt: row.revoked_at,
    revokedReason: row.revoked_reason,
  };
}

function invalid(path: string, message: string): ValidationError {
  return new ValidationError(`${path}: ${message}`, [{ path, message }]);
}

export async function createApiKey(
  db: Executor,
  input: { name: string; scopes: readonly string[]; createdBy: string },
): Promise<ApiKeyInfo & { secret: string }> {
  const name = ApiKeyName.safeParse(input.name);
  if (!name.success) throw invalid("name", name.error.issues[0]!.message);
  const scopes = ScopeList.safeParse(input.scopes);
  if (!scopes.success) {
    const issue = scopes.error.issues[0]!;
    const which = typeof issue.path[0] === "number" ? ` (got "${input.scopes[issue.path[0]]}")` : "";
    throw invalid("scopes", `${issue.message}${which}; scopes are ${SCOPES.join(", ")}`);
  }
  const secret = generateSecret();
  const { rows } = await sql<KeyRow>`
    insert into api.keys (name, secret_sha256, hint, scopes, created_by)
    values (${name.data}, ${hashSecret(secret)}, ${secret.slice(-4)}, ${scopes.data}::text[], ${input.createdBy})
    returning *`.execute(db);
  return { ...toInfo(rows[0]!), secret };
}

export async function listApiKeys(db: Executor, options: { includeRevoked?: boolean } = {}): Promise<ApiKeyInfo[]> {
  const { rows } = await sql<KeyRow>`
    select * from api.keys
    ${options.includeRevoked === false ? sql`where revoked_at is null` : sql``}
    order by created_at, id`.execute(db);
  return rows.map(toInfo);
}

/** Revoke a key for good. Revoking a revoked key is refused with when and why it was revoked. */
export async function revokeApiKey(db: Executor, keyId: string, reason: string): Promise<ApiKeyInfo> {
  if (!z.uuid().safeParse(keyId).success) throw invalid("id", `"${keyId}" is not an API key id (a UUID, see \`list\`)`);
  if (!reason.trim()) throw invalid("reason", "a reason is required to revoke a key");
  const { rows } = await sql<KeyRow>`
    update api.keys set revoked_at = now(), revoked_reason = ${reason.trim()}
    where id = ${keyId} and revoked_at is null
    returning *`.execute(db);
  if (rows[0]) return toInfo(rows[0]);
  const { rows: existing } = await sql<KeyRow>`select * from api.keys where id = ${keyId}`.execute(db);
  if (!existing[0]) throw new NotFoundError(`no API key with id ${keyId}`);
  throw new ConflictError(
    `API key ${keyId} was already revoked at ${existing[0].revoked_at!.toISOString()}: ${existing[0].revoked_reason}`,
  );
}

export type AuthenticationResult =
  | { ok: true; principal: ApiPrincipal }
  | { ok: false; reason: "unknown" | "revoked" };

/** Find the key a secret belongs to. One indexed lookup by hash; the secret is never compared in plain. */
export async function authenticate(db: Executor, secret: string): Promise<AuthenticationResult> {
  if (!looksLikeSecret(secret)) return { ok: false, reason: "unknown" };
  const { rows } = await sql<KeyRow>`select * from api.keys where secret_sha256 = ${hashSecret(secret)}`.execute(db);
  const row = rows[0];
  if (!row) return { ok: false, reason: "unknown" };
  if (row.revoked_at) return { ok: false, reason: "revoked" };
  return { ok: true, principal: { keyId: row.id, name: row.name, scopes: row.scopes as Scope[] } };
}

/** Whether a key with these scopes may use an endpoint that needs `required`. */
export function allows(scopes: readonly Scope[], required: Scope): boolean {
  return scopes.includes("admin") || scopes.includes(required);
}

/**
 * The default local run's convenience: when no key exists at all, create a
 * development key with every scope and return it (the caller prints it once).
 * Returns null when any key, revoked or not, exists. The advisory lock keeps
 * two processes starting together from creating two.
 */
export async function ensureDevelopmentKey(db: Db): Promise<(ApiKeyInfo & { secret: string }) | null> {
  return db.transaction().execute(async (tx) => {
    await sql`select pg_advisory_xact_lock(hashtextextended('tidings:development-api-key', 0))`.execute(tx);
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from api.keys`.execute(tx);
    if (rows[0]!.n > 0) return null;
    return createApiKey(tx, { name: "development", scopes: [...SCOPES], createdBy: "tidings start (embedded database)" });
  });
}
