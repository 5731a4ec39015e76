import pino from "pino";
import { REDACTED, SECRET_KEYS, URL_KEYS, redactSecrets, redactUrl } from "./redact";

export type Logger = pino.Logger;

const urlKeys: ReadonlySet<string> = new Set(URL_KEYS);

/**
 * JSON lines with secrets hidden (src/logging/redact.ts): known keys through
 * pino's `redact` (a token or password hidden whole, a connection string
 * with its credentials hidden), and the text of messages and of logged
 * errors through redactSecrets, since a library's error message can carry
 * a URL it was given.
 */
export function createLogger(level: string, name = "tidings", destination?: pino.DestinationStream): Logger {
  const options: pino.LoggerOptions = {
    name,
    level,
    redact: {
      paths: [...SECRET_KEYS, ...URL_KEYS].flatMap((key) => [key, `*.${key}`, `*.*.${key}`]),
      censor: (value, path) =>
        typeof value === "string" && urlKeys.has(path[path.length - 1] ?? "") ? redactUrl(value) : REDACTED,
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
