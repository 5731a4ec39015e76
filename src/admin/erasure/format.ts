import { outputStyle, renderRows, type OutputStyle } from "../../cli/table";
import { plural } from "../format";
import type { ErasureReport } from "./erase";

/**
 * The erasure report for a terminal (`npm run erase`; --json gives the
 * report as it is): per place the rows rewritten, then what still waits.
 * Places with nothing to rewrite are left out of the table.
 */
const compact = { compact: true };

export function formatErasure(report: ErasureReport, style: OutputStyle = outputStyle()): string {
  const lines: string[] = [];
  const about = `entity ${report.entityId} (${plural(report.notifications.length, "notification")})`;
  if (report.dryRun) {
    lines.push(`DRY RUN: nothing was changed. Erasing the personal data of ${about} would rewrite ${plural(report.rows, "row")}:`);
  } else {
    lines.push(
      `Erased the personal data of ${about} by ${report.actor} (reason: ${JSON.stringify(report.reason)}): ${plural(report.rows, "row")} rewritten; ` +
        `recorded as ${report.erasure!.stream} #${report.erasure!.position} at ${report.erasure!.recordedAt}.`,
    );
  }
  const rows = report.places.filter((p) => p.rows > 0).map((p) => [p.place, String(p.rows)]);
  if (rows.length > 0) lines.push(renderRows(["place", report.dryRun ? "rows to rewrite" : "rows rewritten"], rows, style, compact));
  if (report.waiting.length > 0) {
    lines.push(`${plural(report.waiting.length, "record")} still waiting to be handled: the erasure is refused until they finish (or are stopped with npm run redrive):`);
    lines.push(
      renderRows(
        ["stream", "position", "record id", "type", "concern", "status"],
        report.waiting.map((w) => [w.stream, String(w.position), w.id, w.type, w.concern, w.status]),
        style,
        compact,
      ),
    );
  }
  if (report.dryRun && report.waiting.length === 0) lines.push(`To erase, run again with --execute --reason "<why>".`);
  if (!report.dryRun) lines.push(`Records, times and outcomes are kept: npm run audit -- notification <tracking id> still answers what was sent, and when.`);
  return lines.join("\n");
}
