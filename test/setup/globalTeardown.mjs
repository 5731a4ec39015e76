import pg from "pg";

export default async function globalTeardown() {
  const { serverUrl, template } = globalThis.__TIDINGS_TEST_ADMIN__ ?? {};
  if (serverUrl && template) {
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    // Test files drop their own databases; sweep what a crashed file left.
    const { rows } = await admin.query("select datname from pg_database where datname like $1", [`tidings_t_${process.pid}_%`]);
    for (const { datname } of rows) await admin.query(`drop database if exists "${datname}" with (force)`);
    await admin.query(`drop database if exists ${template} with (force)`);
    await admin.end();
  }
  await globalThis.__TIDINGS_EMBEDDED__?.stop();
}
