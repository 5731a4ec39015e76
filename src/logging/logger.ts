import pino from "pino";
import pretty from "pino-pretty";
import { REDACTED, SECRET_KEYS, URL_KEYS, redactSecrets, redactUrl } from "./redact";

export type Logger = pino.Logger;

const urlKeys: ReadonlySet<string> = new Set(URL_KEYS);

/** What decides how the process writes for people: the stream's TTY-ness and NO_COLOR (https://no-color.org). */
export interface Terminal {
  isTTY?: boolean;
  columns?: number;
}

/** Colour only for a terminal, and never when NO_COLOR is set to anything non-empty. */
export function colourWanted(stream: Terminal = process.stdout, env: NodeJS.ProcessEnv = process.env): boolean {
  return stream.isTTY === true && !env.NO_COLOR;
}

/**
 * Where log lines go: JSON lines on stdout for a collector (a pipe, a file,
 * `docker logs`), or pino-pretty's one human line per entry when stdout is
 * a terminal. pino-pretty runs in this thread (`sync`), so a line printed
 * beside the log (the development key) keeps its place among them.
 */
export function logDestination(stream: Terminal & NodeJS.WritableStream = process.stdout, env: NodeJS.ProcessEnv = process.env): pino.DestinationStream | undefined {
  if (stream.isTTY !== true) return undefined;
  return pretty({
    destination: stream,
    sync: true,
    colorize: colourWanted(stream, env),
    translateTime: "SYS:HH:MM:ss.l",
    ignore: "pid,hostname",
  });
}

/**
 * Log lines with secrets hidden (src/logging/redact.ts): known keys through
 * pino's `redact` (a token or password hidden whole, a connection string
 * with its credentials hidden), and the text of messages and of logged
 * errors through redactSecrets, since a library's error message can carry
 * a URL it was given. Without a destination: stdout, as logDestination says.
 */
export function createLogger(level: string, name = "tidings", destination: pino.DestinationStream | undefined = logDestination()): Logger {
  const options: pino.LoggerOptions = {
    name,
    level,
    redact: {
      paths: [...SECRET_KEYS, ...URL_KEYS].flatMap((key) => [key, `*.${key}`, `*.*.${key}`]),
      censor: (value, path) => (typeof value === "string" && urlKeys.has(path[path.length - 1] ?? "") ? redactUrl(value) : REDACTED),
    },
    serializers: {
      err: (error: Error) => {
        const serialized = pino.stdSerializers.err(error);
        if (typeof serialized.message === "string") serialized.message = redactSecrets(serialized.message);
        if (typeof serialized.stack === "string") serialized.stack = redactSecrets(serialized.stack);
        return serialized;
      },
    },
    hooks: {
      logMethod(args, method) {
        const redacted: unknown[] = args.map((arg) => (typeof arg === "string" ? redactSecrets(arg) : arg));
        // logger.error(error) takes the error's own message as the line's message.
        if (redacted[0] instanceof Error && typeof redacted[1] !== "string") redacted.splice(1, 0, redactSecrets(redacted[0].message));
        return method.apply(this, redacted as Parameters<pino.LogFn>);
      },
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

/**
 * A command-line tool's logger (npm run audit, redrive, apikeys): stderr,
 * so stdout stays the answer (and valid JSON with --json); readable on a
 * terminal, JSON lines otherwise; secrets hidden as in the service's log.
 */
export function createToolLogger(name: string, level = "warn"): Logger {
  return createLogger(level, name, logDestination(process.stderr) ?? pino.destination(2));
}
