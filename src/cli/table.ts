import Table from "cli-table3";
import stringWidth from "string-width";
import { colourWanted, type Terminal } from "../logging/logger";

/**
 * How the command-line tools (npm run audit, redrive, apikeys) lay out rows
 * for people. `--json` output never comes through here.
 *
 * - On a terminal, a table that would be wider than the terminal (80
 *   columns when it does not say) is printed vertically instead: one
 *   `field: value` block per row, as psql's `\x auto` does. Piped or
 *   redirected, there is no width to fit, so tables stay whole (for
 *   `less -S`, a file, a ticket).
 * - Colour (bold headings) only on a terminal, and never with NO_COLOR
 *   (https://no-color.org); a pipe gets no escape codes at all.
 */
export interface OutputStyle {
  /** The columns to fit, or null for no limit (not a terminal). */
  width: number | null;
  colour: boolean;
}

/** What a terminal that does not report its size is taken to be. */
export const DEFAULT_TERMINAL_WIDTH = 80;

export function outputStyle(stream: Terminal = process.stdout, env: NodeJS.ProcessEnv = process.env): OutputStyle {
  return {
    width: stream.isTTY === true ? stream.columns || DEFAULT_TERMINAL_WIDTH : null,
    colour: colourWanted(stream, env),
  };
}

/** For tests and for output that is not for a terminal: no limit, no colour. */
export const PLAIN: OutputStyle = { width: null, colour: false };

const bold = (text: string, style: OutputStyle) => (style.colour ? `\u001b[1m${text}\u001b[22m` : text);

/** The widest line of a block of text, in terminal columns (escape codes and wide characters counted as shown). */
export function widthOf(text: string): number {
  return Math.max(0, ...text.split("\n").map((line) => stringWidth(line)));
}

export interface RowsOptions {
  /** No lines between rows (the re-drive reports' tables). */
  compact?: boolean;
}

/**
 * Rows under their headings: a table when it fits, else one block per row.
 * Cells are expected on one line (callers shorten them).
 */
export function renderRows(headers: readonly string[], rows: readonly (readonly string[])[], style: OutputStyle, options: RowsOptions = {}): string {
  const table = new Table({
    head: headers.map((h) => bold(h, style)),
    // Colour comes from `bold` above or not at all: cli-table3's own colours (red headings, grey borders) are off.
    style: { head: [], border: [], compact: options.compact ?? false },
  });
  for (const row of rows) table.push([...row]);
  const text = table.toString();
  if (style.width === null || widthOf(text) <= style.width) return text;
  return renderVertical(headers, rows, style);
}

/** One `field: value` block per row, fields aligned, blocks apart by a numbered rule. */
export function renderVertical(headers: readonly string[], rows: readonly (readonly string[])[], style: OutputStyle): string {
  const pad = Math.max(0, ...headers.map((h) => stringWidth(h)));
  return rows
    .map((row, i) => {
      const rule = `-[ ${i + 1} ]`;
      const fields = headers.map((h, c) => `${bold(h.padEnd(pad), style)}: ${row[c] ?? ""}`);
      return [rule, ...fields].join("\n");
    })
    .join("\n");
}

/** One record as `field: value` lines: the same layout, whatever the width. */
export function renderFields(entries: readonly (readonly [string, string])[], style: OutputStyle): string {
  const pad = Math.max(0, ...entries.map(([k]) => stringWidth(k)));
  return entries.map(([key, value]) => `${bold(key.padEnd(pad), style)}: ${value}`).join("\n");
}
