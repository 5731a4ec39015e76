import type { Server } from "node:http";
import { ExternalError } from "../errors/errors";
import type { createApp } from "./app";

/** What an operator can do about each listen failure. */
const LISTEN_FAILURES: Record<string, string> = {
  EADDRINUSE: "address already in use (another process listens there: stop it, or set PORT)",
  EACCES: "permission denied (ports below 1024 need privileges: set PORT to 1024 or above)",
  EADDRNOTAVAIL: "address not available (HOST is not an address of this machine)",
  ENOTFOUND: "no such host (set HOST to an address or a name that resolves)",
  EAI_AGAIN: "the host name could not be resolved now (set HOST to an address)",
};

/**
 * How long an idle keep-alive connection stays open. Longer than the idle
 * timeout of the proxies and load balancers usually put in front (60 s), so
 * they close idle connections first: when the server closes one just as a
 * client sends on it, the client gets ECONNRESET for a request it cannot
 * know was not received (Node's default of 5 s made that likely on a busy
 * machine). Headers must arrive within it too (Node requires it larger).
 */
export const KEEP_ALIVE_TIMEOUT_MS = 65_000;

/**
 * Listen, or fail with one line naming the address. Express 5 hands a listen
 * error to the callback, where it is easy to take for success.
 */
export function listen(app: ReturnType<typeof createApp>, host: string, port: number): Promise<Server> {
  return new Promise<Server>((resolve, reject) => {
    const server = app.listen(port, host, (error?: Error) => {
      if (!error) return resolve(server);
      const code = (error as NodeJS.ErrnoException).code ?? "";
      const reason = LISTEN_FAILURES[code] ?? error.message;
      const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
      reject(new ExternalError(`cannot listen on ${address}: ${reason}`, false, { code }, undefined, { cause: error }));
    });
    server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
    server.headersTimeout = KEEP_ALIVE_TIMEOUT_MS + 1_000;
  });
}
