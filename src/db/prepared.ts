import { createHash } from "node:crypto";
import type { PostgresPool, PostgresPoolClient } from "kysely";
import type pg from "pg";

/**
 * Kysely's queries with parameters as named prepared statements, parsed and
 * planned once per connection instead of on every call.
 *
 * node-postgres sends a query with parameters as an unnamed statement, which
 * PostgreSQL parses, analyses and plans on every execution. A notification
 * runs about a hundred statements, most of them the same few dozen texts
 * (claims, appends, the saga's reads): `npm run bench:profile` counted 6.7 to
 * 8.5 ms of planning per notification, about a third of the server's time.
 * A named statement is parsed once per connection (node-postgres remembers
 * which), and after five executions PostgreSQL keeps a generic plan when it
 * costs no more than the custom ones (plan_cache_mode auto).
 *
 * The name is a hash of the text, so the same text always has the same name
 * and two texts never share one. Bounded per connection: past
 * MAX_PER_CONNECTION statements (SQL built with a varying number of
 * parameters), further texts go unnamed as before. (Not an LRU: nothing is
 * deallocated; tidings sends about a hundred distinct texts.)
 *
 * A table or view changed under a prepared statement (a migration while the
 * service runs) makes PostgreSQL refuse it with "cached plan must not change
 * result type" (0A000): the query fails once (a bot retries it; an API
 * request answers 500), and that text gets a new name on the connection, so
 * it is parsed afresh next time. docs/operations.md: restart after migrating.
 */
const MAX_PER_CONNECTION = 200;
const FEATURE_NOT_SUPPORTED = "0A000";
const CACHED_PLAN_CHANGED = "cached plan must not change result type";

interface Prepared {
  names: Map<string, string>;
  /** Texts given a new name after PostgreSQL refused their plan: their old statements stay on the server. */
  renamed: number;
}

function statementName(state: Prepared, text: string): string | null {
  const known = state.names.get(text);
  if (known) return known;
  if (state.names.size + state.renamed >= MAX_PER_CONNECTION) return null;
  const name = `t${createHash("sha1").update(text).digest("hex")}`;
  state.names.set(text, name);
  return name;
}

function wrap(client: pg.PoolClient): PostgresPoolClient {
  const state: Prepared = { names: new Map(), renamed: 0 };
  const query = (textOrCursor: unknown, values?: readonly unknown[]): unknown => {
    if (typeof textOrCursor !== "string" || !values || values.length === 0) {
      return (client.query as (a: unknown, b?: unknown) => unknown)(textOrCursor, values);
    }
    const text = textOrCursor;
    const name = statementName(state, text);
    if (!name) return client.query(text, [...values]);
    return client.query({ name, text, values: [...values] }).catch((error: unknown) => {
      const { code, message } = error as { code?: string; message?: string };
      if (code === FEATURE_NOT_SUPPORTED && message?.includes(CACHED_PLAN_CHANGED)) state.names.set(text, `${name}_${++state.renamed}`);
      throw error;
    });
  };
  return {
    query: query as PostgresPoolClient["query"],
    // pg-pool gives a checked-out client a new release() each time: look it up
    // when called, and pass on Kysely's "discard this connection" (a failed rollback).
    release: (discard?: boolean) => client.release(discard),
  };
}

/** `pool` for Kysely's PostgresDialect, its clients sending named prepared statements. */
export function preparingPool(pool: pg.Pool): PostgresPool {
  const wrappers = new WeakMap<pg.PoolClient, PostgresPoolClient>();
  return {
    async connect() {
      const client = await pool.connect();
      let wrapper = wrappers.get(client);
      if (!wrapper) {
        wrapper = wrap(client);
        wrappers.set(client, wrapper);
      }
      return wrapper;
    },
    end: () => pool.end(),
  };
}
