import { colourWanted, type Terminal } from "./logger";

/**
 * A value a person must copy now (the development API key): on a terminal,
 * set apart from the log by blank lines, alone on its line and bold when
 * colour is wanted, so it is neither missed nor copied with a log prefix.
 * Elsewhere nothing is written: a log collector has the log line, and a
 * stray non-JSON line would break its parsing.
 */
export function announce(title: string, value: string, stream: Terminal & { write(text: string): unknown } = process.stdout, env: NodeJS.ProcessEnv = process.env): void {
  if (stream.isTTY !== true) return;
  const shown = colourWanted(stream, env) ? `\u001b[1m${value}\u001b[22m` : value;
  stream.write(`\n  ${title}\n\n    ${shown}\n\n`);
}
