import pg from "pg";

/**
 * Test files that must not run at the same time as each other take turns:
 * a session-level advisory lock on the test server, held from the file's
 * beforeAll to its afterAll. Jest runs files in parallel workers; this makes
 * two of them exclusive by construction, whatever the scheduling.
 *
 * Returns the release. Waits as long as the other file holds the turn.
 */
export async function takeTurn(name: string): Promise<() => Promise<void>> {
  const serverUrl = process.env.TIDINGS_TEST_SERVER_URL;
  if (!serverUrl) throw new Error("TIDINGS_TEST_SERVER_URL is not set (test/setup/globalSetup.mjs sets it)");
  const session = new pg.Client({ connectionString: serverUrl, application_name: `tidings-test-turn ${name}` });
  await session.connect();
  await session.query("select pg_advisory_lock(hashtextextended($1, 0))", [`tidings tests: ${name}`]);
  return async () => {
    // Ending the session releases the lock.
    await session.end();
  };
}

/**
 * The host's network interfaces: the several-hosts test adds a bridge with an
 * address, veth pairs and namespaces, and cuts links; Chromium aborts what a
 * page is loading when they change (net::ERR_NETWORK_CHANGED), and a console
 * whose module failed to load renders nothing for the rest of the file.
 */
export const HOST_NETWORK = "host network";
