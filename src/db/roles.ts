import pg from "pg";
import { createPool } from "./database";
import { DatabaseSetupError, migrate, type MigrateOptions } from "./migrate";

/**
 * Who is who in the database (docs/security.md):
 *
 * - tidings_owner: owns every object tidings creates; migrations run as it
 *   (SET ROLE from the migrating login). NOLOGIN. It holds CREATEROLE only
 *   while a superuser migrates (it creates the actor roles): on PostgreSQL
 *   15 and older CREATEROLE may grant pg_execute_server_program, so a
 *   standing CREATEROLE would make the owner a step from superuser.
 * - tidings_service: the running service's role. A member of every actor
 *   role so it may SET LOCAL ROLE to each, NOINHERIT so it holds none of
 *   their privileges unless it does (migrations/0001_engine.sql).
 * - the service login (tidings_app unless DATABASE_URL names another):
 *   LOGIN, granted tidings_service and CONNECT on this database, nothing
 *   else. Neither a superuser nor an owner: it cannot disable a trigger,
 *   truncate a stream, or set session_replication_role.
 */
export const OWNER_ROLE = "tidings_owner";
export const SERVICE_ROLE = "tidings_service";
export const DEFAULT_SERVICE_LOGIN = "tidings_app";

/** The migrating login cannot set the roles up; the message says what an administrator must run. */
export class RolesNotReadyError extends DatabaseSetupError {
  override name = "RolesNotReadyError";
}

/** The service's login may do more than the service needs; the message says what to change. */
export class PrivilegedServiceLoginError extends DatabaseSetupError {
  override name = "PrivilegedServiceLoginError";
}

export interface ServiceLogin {
  user: string;
  /** Set as the login's password when given (the URL's password). */
  password?: string;
}

/** The login and password a postgres:// URL connects with. */
export function loginOf(url: string): ServiceLogin {
  const u = new URL(url);
  const user = decodeURIComponent(u.username) || process.env.PGUSER || "";
  if (!user) throw new RolesNotReadyError("the service's DATABASE_URL names no user: give it the service login, e.g. postgres://tidings_app:secret@host/tidings");
  return u.password ? { user, password: decodeURIComponent(u.password) } : { user };
}

const quoteIdent = (name: string) => `"${name.replace(/"/g, '""')}"`;
const quoteLiteral = (text: string) => `'${text.replace(/'/g, "''")}'`;

interface Me {
  user: string;
  database: string;
  superuser: boolean;
  databaseOwner: boolean;
  ownerExists: boolean;
  ownerMember: boolean;
}

async function whoAmI(client: pg.Client): Promise<Me> {
  const { rows } = await client.query<Me>(
    `
    select current_user as "user", current_database() as database, r.rolsuper as superuser,
           d.datdba = r.oid as "databaseOwner",
           exists (select 1 from pg_roles where rolname = $1) as "ownerExists",
           exists (select 1 from pg_roles where rolname = $1) and pg_has_role(current_user, $1, 'MEMBER') as "ownerMember"
    from pg_roles r, pg_database d
    where r.rolname = current_user and d.datname = current_database()`,
    [OWNER_ROLE],
  );
  return rows[0]!;
}

/** What an administrator runs once when the migrating login is not a superuser. */
function setupInstructions(me: Me): string {
  const db = quoteIdent(me.database);
  return [
    `as a superuser, once: create role ${OWNER_ROLE} nologin createrole; (withdraw createrole after migrating: alter role ${OWNER_ROLE} nocreaterole)`,
    `grant ${OWNER_ROLE} to ${quoteIdent(me.user)};`,
    `grant create on database ${db} to ${OWNER_ROLE};`,
    `revoke connect on database ${db} from public;`,
    `grant connect on database ${db} to ${quoteIdent(me.user)};`,
    `(or run npm run migrate once with MIGRATION_DATABASE_URL naming a superuser: docs/security.md)`,
  ].join(" ");
}

/**
 * Set the roles up and migrate, from a migrating login: a superuser (it then
 * creates tidings_owner and makes the database private), or a login that is
 * a member of tidings_owner. Migrations run as tidings_owner. When the
 * service's login is given, it is created if missing (with its password when
 * given), granted tidings_service, and CONNECT on the database when this
 * login may grant it. Returns the migrations applied.
 */
export async function prepareDatabase(
  migrationUrl: string,
  options: { serviceLogin?: ServiceLogin; log?: (message: string) => void; applicationName?: string } & MigrateOptions = {},
): Promise<string[]> {
  const log = options.log ?? (() => {});
  const admin = new pg.Client({ connectionString: migrationUrl, application_name: options.applicationName ?? "tidings-migrate" });
  await admin.connect();
  let applied: string[];
  try {
    const me = await whoAmI(admin);
    if (!me.ownerExists) {
      if (!me.superuser) {
        throw new RolesNotReadyError(`role ${OWNER_ROLE} does not exist and ${me.user} may not create it: ${setupInstructions(me)}`);
      }
      await admin.query(`create role ${OWNER_ROLE} nologin`).catch((error: { code?: string }) => {
        if (error.code !== "42710" && error.code !== "23505") throw error; // created meanwhile by another process
      });
      log(`created role ${OWNER_ROLE}, the owner of tidings's schema`);
    } else if (!me.superuser && !me.ownerMember) {
      throw new RolesNotReadyError(`${me.user} may not migrate: it is not a member of ${OWNER_ROLE}; ${setupInstructions(me)}`);
    }
    const db = quoteIdent(me.database);
    if (me.superuser) await admin.query(`grant create on database ${db} to ${OWNER_ROLE}`);
    // Actor roles belong to the server, not to one database: a login granted
    // tidings_client for another database must not find this one open to it.
    if (me.superuser || me.databaseOwner) {
      await admin.query(`revoke connect on database ${db} from public`);
    } else if ((await admin.query<{ open: boolean }>(`select has_database_privilege('public', current_database(), 'CONNECT') as open`)).rows[0]?.open) {
      log(`warning: every role may connect to database ${me.database}; revoke connect on database ${db} from public (docs/security.md)`);
    }

    // Every object created from here on belongs to tidings_owner, graphile-worker's included.
    // It may create roles (the actors) while this migration runs, and no longer.
    if (me.superuser) await admin.query(`alter role ${OWNER_ROLE} createrole`);
    const ownerPool = createPool(migrationUrl, 2, options.applicationName ?? "tidings-migrate", { role: OWNER_ROLE });
    try {
      applied = await migrate(ownerPool, log, options.upTo === undefined ? {} : { upTo: options.upTo });
      if (options.serviceLogin) await prepareServiceLogin(me.superuser ? admin : ownerPool, admin, me, options.serviceLogin, log);
    } finally {
      await ownerPool.end();
      if (me.superuser) await withdrawCreateRole(admin);
    }
  } finally {
    await admin.end();
  }
  return applied;
}

/**
 * CREATEROLE back off, unless another tidings migration on this server is
 * under way (it holds the migration lock in its database; pg_locks shows
 * every database's): the last one to finish withdraws it.
 */
async function withdrawCreateRole(admin: pg.Client): Promise<void> {
  const { rows } = await admin.query<{ busy: boolean }>(`
    select exists (
      select 1 from pg_locks l
      where l.locktype = 'advisory' and l.objsubid = 1 and l.granted and l.pid <> pg_backend_pid()
        and ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended('tidings:migrate', 0)
    ) as busy`);
  if (!rows[0]!.busy) await admin.query(`alter role ${OWNER_ROLE} nocreaterole`);
}

async function prepareServiceLogin(roles: Pick<pg.Client, "query">, admin: pg.Client, me: Me, login: ServiceLogin, log: (m: string) => void): Promise<void> {
  const name = quoteIdent(login.user);
  const password = login.password === undefined ? "" : ` password ${quoteLiteral(login.password)}`;
  const { rows } = await roles.query<{ rolsuper: boolean }>("select rolsuper from pg_roles where rolname = $1", [login.user]);
  if (rows.length === 0) {
    await roles.query(`create role ${name} login${password}`).catch((error: { code?: string }) => {
      if (error.code !== "42710" && error.code !== "23505") throw error;
    });
    log(`created the service login ${login.user}`);
  } else if (rows[0]?.rolsuper) {
    // Refused at start (assertServiceLogin); nothing to grant a superuser.
    return;
  } else if (password) {
    await roles.query(`alter role ${name}${password}`);
    // Roles are the server's: say so, as it may be another database's login too.
    log(`set the password of the existing service login ${login.user} (a login of the whole server)`);
  }
  await roles.query(`grant ${SERVICE_ROLE} to ${name}`);
  await askForTcpTimeouts(admin, me, name, log);
  if (me.superuser || me.databaseOwner) {
    await admin.query(`grant connect on database ${quoteIdent(me.database)} to ${name}`);
  } else if (!(await admin.query<{ ok: boolean }>("select has_database_privilege($1, current_database(), 'CONNECT') as ok", [login.user])).rows[0]?.ok) {
    log(`warning: ${login.user} may not connect to database ${me.database}: grant connect on database ${quoteIdent(me.database)} to ${name}`);
  }
}

/**
 * Sessions of the service login in this database ask the server for TCP
 * keepalives and a user timeout. A worker host that vanishes (its link cut,
 * not its process stopped) leaves its sessions open until TCP notices: hours
 * for an idle one by the kernel's defaults, about 15 minutes for one whose
 * reply was never acknowledged, holding its transaction's locks all along.
 * These end them within about 25 s, inside the default 30 s worker lease
 * (test/hosts, docs/scaling.md). Set on the login (in this database) rather
 * than by each connection, so poolers such as PgBouncer pass nothing unusual.
 */
const SESSION_TCP_SETTINGS = { tcp_keepalives_idle: 10, tcp_keepalives_interval: 5, tcp_keepalives_count: 3, tcp_user_timeout: 20_000 };

async function askForTcpTimeouts(admin: pg.Client, me: Me, name: string, log: (m: string) => void): Promise<void> {
  const statements = Object.entries(SESSION_TCP_SETTINGS).map(([setting, value]) => `alter role ${name} in database ${quoteIdent(me.database)} set ${setting} = ${value}`);
  if (!me.superuser) {
    log(`recommended, as a superuser: ${statements.join("; ")} (docs/scaling.md)`);
    return;
  }
  for (const statement of statements) await admin.query(statement);
}

/**
 * The service runs only as a login that can change nothing but what its
 * actors are granted: not a superuser, not a member of tidings_owner, owning
 * nothing in tidings's schemas, and granted tidings_service.
 */
export async function assertServiceLogin(pool: pg.Pool): Promise<void> {
  const { rows } = await pool.query<{ user: string; superuser: boolean; owner: boolean; owns: string | null; service: boolean }>(
    `
    select current_user as "user", r.rolsuper as superuser,
           exists (select 1 from pg_roles where rolname = $1) and pg_has_role(current_user, $1, 'MEMBER') as owner,
           (select min(n.nspname || '.' || c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where c.relowner = r.oid and n.nspname in (select split_part(name, '.', 1) from tidings.streams union select 'tidings')) as owns,
           exists (select 1 from pg_roles where rolname = $2) and pg_has_role(current_user, $2, 'MEMBER') as service
    from pg_roles r where r.rolname = current_user`,
    [OWNER_ROLE, SERVICE_ROLE],
  );
  const me = rows[0]!;
  const fix = "run the service as its own login (DATABASE_URL) and migrate with MIGRATION_DATABASE_URL; docs/security.md";
  if (me.superuser) throw new PrivilegedServiceLoginError(`DATABASE_URL logs in as ${me.user}, a superuser: ${fix}`);
  if (me.owner) throw new PrivilegedServiceLoginError(`DATABASE_URL logs in as ${me.user}, a member of ${OWNER_ROLE}: ${fix}`);
  if (me.owns) throw new PrivilegedServiceLoginError(`DATABASE_URL logs in as ${me.user}, which owns ${me.owns}: ${fix}`);
  if (!me.service) {
    throw new PrivilegedServiceLoginError(
      `DATABASE_URL logs in as ${me.user}, which is not granted ${SERVICE_ROLE}: grant ${SERVICE_ROLE} to ${quoteIdent(me.user)} (npm run migrate does it when given DATABASE_URL and MIGRATION_DATABASE_URL)`,
    );
  }
}
