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
 * MAX_PER_CONNECTION distinct texts (SQL built with a varying number of
 * parameters), further ones go unnamed as before.
 *
 * A table or view changed under a prepared statement (a migration while the
 * service runs) makes PostgreSQL refuse it with "cached plan must not change
 * result type" (0A000): that text then gets a new name on the connection, so
 * it is parsed afresh, and outside a transaction the query is sent again at
 * once. Inside one the error stands (the transaction is aborted): the
 * caller's retry runs it again, under the new name.
 */
const MAX_PER_CONNECTION = 500;
const CACHED_PLAN_CHANGED = "0A000";

interface Prepared {
  names: Map<string, string>;
  renamed: number;
  /** Between a BEGIN and its COMMIT or ROLLBACK on this connection. */
  inTransaction: boolean;
}

const OPENS = /^\s*(begin|start\s+transaction)\b/i;
const CLOSES = /^\s*(commit|rollback|end|abort)\b/i;

function statementName(state: Prepared, text: string): string | null {
  const known = state.names.get(text);
  if (known) return known;
  if (state.names.size >= MAX_PER_CONNECTION) return null;
  const name = `t${createHash("sha1").update(text).digest("hex")}`;
  state.names.set(text, name);
  return name;
}

function wrap(client: pg.PoolClient): PostgresPoolClient {
  const state: Prepared = { names: new Map(), renamed: 0, inTransaction: false };
  const send = (text: string, values: unknown[], retried = false): Promise<pg.QueryResult> => {
    const name = statementName(state, text);
    if (!name) return client.query(text, values);
    return client.query({ name, text, values }).catch((error: unknown) => {
      if ((error as { code?: string }).code !== CACHED_PLAN_CHANGED) throw error;
      state.names.set(text, `${name}_${++state.renamed}`);
      if (state.inTransaction || retried) throw error;
      return send(text, values, true);
    });
  };
  const query = (textOrCursor: unknown, values?: readonly unknown[]): unknown => {
    if (typeof textOrCursor === "string") {
      if (OPENS.test(textOrCursor)) state.inTransaction = true;
      else if (CLOSES.test(textOrCursor)) state.inTransaction = false;
    }
    if (typeof textOrCursor !== "string" || !values || values.length === 0) {
      return (client.query as (a: unknown, b?: unknown) => unknown)(textOrCursor, values);
    }
    return send(textOrCursor, [...values]);
  };
  return {
    query: query as PostgresPoolClient["query"],
    // pg-pool gives a checked-out client a new release() each time: look it up when called.
    release: () => client.release(),
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
