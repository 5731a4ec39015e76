import { renderFields, renderRows, type OutputStyle } from "../cli/table";

/**
 * Plain-text rendering of audit rows for people: one table per list (one
 * block per row when the table would not fit the terminal, src/cli/table.ts),
 * field / value lines for a single row. JSON output does not come through here.
 */

/** Cells longer than this are cut in tables (JSON output keeps everything). */
const MAX_CELL = 72;

export function cell(value: unknown): string {
  let text: string;
  if (value === null || value === undefined) text = "";
  else if (value instanceof Date) text = value.toISOString();
  else if (Array.isArray(value)) text = value.map((v) => (typeof v === "string" ? v : JSON.stringify(v))).join(", ");
  else if (typeof value === "object") text = JSON.stringify(value);
  else text = String(value);
  // One line per cell: a multi-line error or reply would break the table.
  text = text.replace(/\s*[\r\n]+\s*/g, " ");
  return text.length > MAX_CELL ? `${text.slice(0, MAX_CELL - 1)}…` : text;
}

export interface Column<Row> {
  header: string;
  value: (row: Row) => unknown;
}

/** Columns named after row keys, in the given order. */
export function columns<Row>(...keys: Array<keyof Row & string>): Column<Row>[] {
  return keys.map((key) => ({ header: key, value: (row: Row) => row[key] }));
}

export function renderTable<Row>(rows: readonly Row[], cols: readonly Column<Row>[], style: OutputStyle): string {
  const text = renderRows(
    cols.map((c) => c.header),
    rows.map((row) => cols.map((c) => cell(c.value(row)))),
    style,
  );
  // No rows in the vertical layout is no text at all; the count says it.
  return `${text ? `${text}\n` : ""}(${rows.length} ${rows.length === 1 ? "row" : "rows"})`;
}

/** One row as field / value lines. */
export function renderRecord(row: object, style: OutputStyle): string {
  return renderFields(
    Object.entries(row).map(([key, value]) => [key, cell(value)] as const),
    style,
  );
}
