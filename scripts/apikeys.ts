import "dotenv/config";
import os from "node:os";
import { Command, InvalidArgumentError } from "commander";
import { EXIT_REFUSED } from "./toolErrors";
import { outputStyle, renderRows } from "../src/cli/table";
import { SCOPES, createApiKey, listApiKeys, revokeApiKey, setApiKeyRateLimit, type ApiKeyInfo } from "../src/auth/apiKeys";
import { createToolLogger } from "../src/logging/logger";
import { ConfigError, loadConfig } from "../src/config/config";
import { openDatabaseForTool, type Database } from "../src/db/connect";
import { DatabaseSetupError } from "../src/db/migrate";
import { TidingsError } from "../src/errors/errors";

/**
 * `npm run apikeys -- <create|list|revoke>`: manage the HTTP API's keys
 * (src/auth/apiKeys.ts, docs/api.md). The secret is printed once, by create.
 */

async function connect(): Promise<Database> {
  const config = loadConfig();
  // Logs go to stderr: stdout is the answer (and valid JSON with --json).
  const logger = createToolLogger("tidings-apikeys", process.env.LOG_LEVEL ? config.LOG_LEVEL : "warn");
  return openDatabaseForTool({ ...config, DB_POOL_SIZE: 2 }, logger, "tidings-apikeys");
}

async function withDatabase<T>(fn: (database: Database) => Promise<T>): Promise<T> {
  const database = await connect();
  try {
    return await fn(database);
  } finally {
    await database.close();
  }
}

function parseScopes(value: string): string[] {
  const scopes = value
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const unknown = scopes.filter((s) => !(SCOPES as readonly string[]).includes(s));
  if (scopes.length === 0) throw new InvalidArgumentError(`give at least one of: ${SCOPES.join(", ")}`);
  if (unknown.length > 0) throw new InvalidArgumentError(`unknown scope ${unknown.map((s) => `"${s}"`).join(", ")}; scopes are ${SCOPES.join(", ")}`);
  return scopes;
}

/** A positive whole number of requests per window, or "default" (null: the API's API_RATE_LIMIT). */
function parseRateLimit(value: string): number | null {
  if (value === "default") return null;
  if (!/^[1-9][0-9]{0,9}$/.test(value) || Number(value) > 1_000_000_000) {
    throw new InvalidArgumentError(`give a whole number of requests per window from 1 to 1000000000, or "default" (got "${value}")`);
  }
  return Number(value);
}

const describeRateLimit = (limit: number | null) => (limit === null ? "default (API_RATE_LIMIT)" : `${limit} requests per window`);

function publicView(k: ApiKeyInfo) {
  return {
    id: k.keyId,
    name: k.name,
    scopes: k.scopes,
    hint: `tdk_…${k.hint}`,
    createdAt: k.createdAt.toISOString(),
    createdBy: k.createdBy,
    revokedAt: k.revokedAt?.toISOString() ?? null,
    revokedReason: k.revokedReason,
    rateLimit: k.rateLimit,
  };
}

const program = new Command().name("apikeys").description("Create, list and revoke API keys of the tidings HTTP API. Only a hash of each secret is stored.").showHelpAfterError();

program
  .command("create")
  .description("create a key and print its secret (shown only this once)")
  .requiredOption("--name <name>", "what the key is for, e.g. billing-service")
  .requiredOption("--scopes <list>", `comma-separated scopes: ${SCOPES.join(", ")}`, parseScopes)
  .option("--rate-limit <n>", 'requests per rate-limit window (API_RATE_LIMIT_WINDOW_SECONDS), or "default"', parseRateLimit)
  .option("--json", "print JSON")
  .action(async (options: { name: string; scopes: string[]; rateLimit?: number | null; json?: boolean }) => {
    const key = await withDatabase((d) =>
      createApiKey(d.db, {
        name: options.name,
        scopes: options.scopes,
        createdBy: `apikeys script (${os.userInfo().username})`,
        rateLimit: options.rateLimit ?? null,
      }),
    );
    if (options.json) {
      process.stdout.write(`${JSON.stringify({ ...publicView(key), secret: key.secret })}\n`);
      return;
    }
    process.stdout.write(
      [
        `created API key ${key.keyId}`,
        `  name:   ${key.name}`,
        `  scopes: ${key.scopes.join(", ")}`,
        `  rate limit: ${describeRateLimit(key.rateLimit)}`,
        `  secret: ${key.secret}`,
        "",
        "The secret is shown only this once and is not stored; keep it now.",
        `Use it as: Authorization: Bearer ${key.secret}`,
        "",
      ].join("\n"),
    );
  });

program
  .command("list")
  .description("list keys (never their secrets)")
  .option("--active", "only keys that are not revoked")
  .option("--json", "print the keys as a JSON array")
  .action(async (options: { active?: boolean; json?: boolean }) => {
    const keys = await withDatabase((d) => listApiKeys(d.db, { includeRevoked: !options.active }));
    if (options.json) {
      process.stdout.write(`${JSON.stringify(keys.map(publicView))}\n`);
      return;
    }
    if (keys.length === 0) {
      process.stdout.write("no API keys\n");
      return;
    }
    const rows = keys
      .map(publicView)
      .map((v) => [v.id, v.name, v.scopes.join(","), v.hint, String(v.rateLimit ?? "default"), v.createdAt, v.revokedAt ? `${v.revokedAt}: ${v.revokedReason}` : "-"]);
    process.stdout.write(`${renderRows(["id", "name", "scopes", "secret", "rate limit", "created", "revoked"], rows, outputStyle())}\n`);
  });

program
  .command("revoke")
  .description("revoke a key for good: requests with it are refused (401) from now on")
  .argument("<id>", "the key's id (see list)")
  .requiredOption("--reason <reason>", "why, kept with the key")
  .action(async (id: string, options: { reason: string }) => {
    const key = await withDatabase((d) => revokeApiKey(d.db, id, options.reason));
    process.stdout.write(`revoked API key ${key.keyId} (${key.name}) at ${key.revokedAt!.toISOString()}: ${key.revokedReason}\n`);
  });

program
  .command("rate-limit")
  .description("set a key's request rate limit per window (shared by every API process), from its next request on")
  .argument("<id>", "the key's id (see list)")
  .argument("<limit>", 'requests per window (API_RATE_LIMIT_WINDOW_SECONDS), or "default" for API_RATE_LIMIT', parseRateLimit)
  .action(async (id: string, limit: number | null) => {
    const key = await withDatabase((d) => setApiKeyRateLimit(d.db, id, limit));
    process.stdout.write(`API key ${key.keyId} (${key.name}): rate limit ${describeRateLimit(key.rateLimit)}\n`);
  });

program.parseAsync(process.argv).catch((error: unknown) => {
  // The database's answer (unreachable, schema not migrated, wrong login) is one line too.
  if (error instanceof ConfigError || error instanceof TidingsError || error instanceof DatabaseSetupError) {
    process.stderr.write(`apikeys: ${error.message}\n`);
    process.exit(EXIT_REFUSED);
  }
  process.stderr.write(`apikeys failed: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
});
