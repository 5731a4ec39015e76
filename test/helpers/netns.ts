/**
 * Hosts on a real network, on one machine: each host is a Linux network
 * namespace (`ip netns`) with its own interface, address and loopback,
 * plugged into one bridge by a veth pair, as separate machines are plugged
 * into one switch. Each host's outgoing packets can be delayed by `tc netem`.
 * The test process stays in the machine's own namespace and reaches every
 * host through the bridge (it holds the bridge's address, the "gateway").
 *
 * A host's link is cut with `ip link set <its switch port> down`: its
 * processes keep running, their packets go nowhere, their connections hang
 * as over a pulled cable (no reset, no FIN), which is what a process kill or
 * a refused connection does not reproduce.
 *
 * Creating namespaces needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): where that
 * fails, `probeNamespaces` says why so a test can skip with that reason.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import net from "node:net";

/** The namespaces of one run are `tidings-<pid>-<host>`: a later run can tell a crashed run's leftovers by their dead pid. */
const PREFIX = "tidings-";

function ip(args: string[]): string {
  return execFileSync("ip", args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

function tryRun(command: string, args: string[]): { ok: true } | { ok: false; error: string } {
  try {
    execFileSync(command, args, { stdio: ["ignore", "ignore", "pipe"] });
    return { ok: true };
  } catch (error) {
    const e = error as { stderr?: Buffer; message: string };
    return { ok: false, error: (e.stderr?.toString() || e.message).trim() };
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Whether this process can create network namespaces and veth pairs here:
 * `{ ok: true }`, or the reason it cannot (not root, no `ip`, a kernel or a
 * container that refuses them).
 */
export function probeNamespaces(): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== "linux") return { ok: false, reason: `network namespaces are Linux only (this is ${process.platform})` };
  if (process.getuid?.() !== 0) return { ok: false, reason: "creating network namespaces needs root (run the test as root, as CI does)" };
  const name = `${PREFIX}${process.pid}-probe`;
  const added = tryRun("ip", ["netns", "add", name]);
  if (!added.ok) return { ok: false, reason: `\`ip netns add\` failed: ${added.error}` };
  try {
    // Both ends inside the probe's namespace: this host's own interfaces do not change
    // (test/helpers/turns.ts: a browser test may be loading pages meanwhile).
    const veth = tryRun("ip", ["-n", name, "link", "add", `tp${process.pid.toString(36)}a`, "type", "veth", "peer", "name", `tp${process.pid.toString(36)}b`]);
    if (!veth.ok) return { ok: false, reason: `\`ip link add ... type veth\` failed: ${veth.error}` };
    return { ok: true };
  } finally {
    tryRun("ip", ["netns", "del", name]);
  }
}

/** Delete namespaces (and so their interfaces) and bridges left by runs whose process is gone. */
export function sweepLeftovers(): string[] {
  const swept: string[] = [];
  for (const line of ip(["netns", "list"]).split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const pid = Number(new RegExp(`^${PREFIX}(\\d+)-`).exec(name)?.[1]);
    if (pid && pid !== process.pid && !alive(pid)) {
      tryRun("ip", ["netns", "del", name]);
      swept.push(name);
    }
  }
  // Switch ports t<pid36><i>p and bridges t<pid36>br.
  for (const line of ip(["-o", "link", "show"]).split("\n")) {
    const match = /^\d+: (t([0-9a-z]+)(?:\dp|br))[@:]/.exec(line);
    const name = match?.[1];
    const pid = match ? parseInt(match[2]!, 36) : NaN;
    if (name && pid !== process.pid && !alive(pid)) {
      tryRun("ip", ["link", "del", name]);
      swept.push(name);
    }
  }
  return swept;
}

export interface Host {
  name: string;
  /** The namespace, `tidings-<pid>-<name>`. */
  namespace: string;
  /** Its address on the bridge. */
  address: string;
  /** Its end of the veth pair, as seen inside the host. */
  device: "eth0";
  /** The other end, plugged into the bridge in the machine's namespace: the host's switch port. */
  port: string;
}

export interface Network {
  /** The bridge's address: where the test process is reached from every host. */
  gateway: string;
  hosts: Record<string, Host>;
  /** The delay `tc netem` adds to every packet a host sends, or null where netem is missing (the reason in `netemMissing`). */
  delayMs: number | null;
  netemMissing: string | null;
  /** Take the host's switch port down: the host is cut off, its processes keep running. */
  cut(host: string): void;
  /** Bring it back up. */
  restore(host: string): void;
  /** Start a process inside the host's namespace (`ip netns exec`, which execs: the child's pid is the process's own). */
  spawn(host: string, command: string, args: string[], options: { env: NodeJS.ProcessEnv; cwd?: string }): ChildProcess;
  /** Delete the namespaces and the bridge (the veth pairs go with them). */
  destroy(): void;
}

/**
 * A bridge `t<pid36>br` on 10.234.<pid % 256>.0/24 (the gateway at .1) and a
 * namespace per host at .2, .3, ... in the order given. `delayMs` is added
 * by netem on every host's outgoing packets, so a round trip between two
 * hosts takes twice that; where the kernel has no netem, the network is
 * built without it and `netemMissing` says so.
 */
export function createNetwork(hostNames: readonly string[], options: { delayMs: number }): Network {
  const tag = process.pid.toString(36);
  const subnet = `10.234.${process.pid % 256}`;
  const bridge = `t${tag}br`;
  const hosts: Record<string, Host> = {};
  const created: string[] = [];
  const ports: string[] = [];
  // The ports first: a namespace outlives `ip netns del` while a socket of a
  // cut-off host still retransmits in it, and would keep its veth pair.
  const destroy = () => {
    for (const port of ports) tryRun("ip", ["link", "del", port]);
    for (const namespace of created) tryRun("ip", ["netns", "del", namespace]);
    tryRun("ip", ["link", "del", bridge]);
  };
  let netemMissing: string | null = null;
  try {
    ip(["link", "add", bridge, "type", "bridge"]);
    ip(["addr", "add", `${subnet}.1/24`, "dev", bridge]);
    ip(["link", "set", bridge, "up"]);
    hostNames.forEach((name, i) => {
      const namespace = `${PREFIX}${process.pid}-${name}`;
      const port = `t${tag}${i}p`;
      ip(["netns", "add", namespace]);
      created.push(namespace);
      ip(["link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace]);
      ports.push(port);
      ip(["link", "set", port, "master", bridge]);
      ip(["link", "set", port, "up"]);
      ip(["-n", namespace, "addr", "add", `${subnet}.${i + 2}/24`, "dev", "eth0"]);
      ip(["-n", namespace, "link", "set", "eth0", "up"]);
      ip(["-n", namespace, "link", "set", "lo", "up"]);
      if (netemMissing === null) {
        const netem = tryRun("ip", ["netns", "exec", namespace, "tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", `${options.delayMs}ms`]);
        if (!netem.ok) netemMissing = `tc netem is not available here (${netem.error}); the hosts' links have no added delay`;
      }
      hosts[name] = { name, namespace, address: `${subnet}.${i + 2}`, device: "eth0", port };
    });
  } catch (error) {
    destroy();
    throw error;
  }
  const host = (name: string) => {
    const h = hosts[name];
    if (!h) throw new Error(`no host ${name} on this network`);
    return h;
  };
  return {
    gateway: `${subnet}.1`,
    hosts,
    delayMs: netemMissing === null ? options.delayMs : null,
    netemMissing,
    cut: (name) => void ip(["link", "set", host(name).port, "down"]),
    restore: (name) => void ip(["link", "set", host(name).port, "up"]),
    spawn: (name, command, args, spawnOptions) =>
      spawn("ip", ["netns", "exec", host(name).namespace, command, ...args], {
        env: spawnOptions.env,
        cwd: spawnOptions.cwd,
        stdio: ["ignore", "pipe", "pipe"],
      }),
    destroy,
  };
}

export interface Relay {
  /** Where the hosts connect: the gateway address and this port. */
  host: string;
  port: number;
  close(): Promise<void>;
}

/**
 * A plain TCP relay from `listenHost` (the gateway) to a server of the test
 * process on 127.0.0.1, which the hosts cannot reach (each namespace has a
 * loopback of its own). Bytes and half-closes pass through unchanged; a
 * connection cut on one side is cut on the other. A host whose link is cut
 * leaves its relayed connections open, as the server's own would stay.
 */
export async function startRelay(listenHost: string, targetPort: number): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  const track = (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
  };
  const server = net.createServer({ allowHalfOpen: true }, (inbound) => {
    track(inbound);
    const outbound = net.connect({ port: targetPort, host: "127.0.0.1", allowHalfOpen: true });
    track(outbound);
    inbound.pipe(outbound);
    outbound.pipe(inbound);
    inbound.on("error", () => outbound.destroy());
    outbound.on("error", () => inbound.destroy());
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, listenHost, () => resolve());
  });
  return {
    host: listenHost,
    port: (server.address() as net.AddressInfo).port,
    async close() {
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
