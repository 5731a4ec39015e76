import { outputStyle, renderRows, type OutputStyle } from "../cli/table";
import type { ActionReport, ResendReport, StuckReport, SwitchReport } from "./redrive";
import type { SelectedRecord, SelectionResult } from "./selection";

/**
 * Plain-text renderings of the re-drive reports for a terminal (the CLI's
 * default; --json gives the reports as they are). Tables have no lines
 * between rows, turn into one block per row when they would not fit the
 * terminal, and have colour only on a terminal (src/cli/table.ts): output
 * is often piped or pasted into a ticket.
 */
const compact = { compact: true };

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  const s = Math.floor(ms / 1000);
  const units: [number, string][] = [
    [86_400, "d"],
    [3_600, "h"],
    [60, "m"],
    [1, "s"],
  ];
  const parts: string[] = [];
  let rest = s;
  for (const [size, unit] of units) {
    if (rest >= size && parts.length < 2) {
      parts.push(`${Math.floor(rest / size)}${unit}`);
      rest %= size;
    }
  }
  return parts.join("");
}

function short(text: string | null, max = 60): string {
  if (!text) return "";
  const oneLine = text.replace(/\s+/g, " ");
  return oneLine.length > max ? `${oneLine.slice(0, max - 1)}…` : oneLine;
}

/** "1 record", "3 records": a count with its noun. */
export function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

function recordCells(r: SelectedRecord): string[] {
  return [r.stream, String(r.position), r.id, r.type, r.concern];
}

export function formatAction(report: ActionReport, style: OutputStyle = outputStyle()): string {
  const lines: string[] = [];
  const first = report.changes[0];
  const move = first ? `${first.status} → ${first.to}${first.requeue ? ", job queued again" : ""}` : "";
  if (report.dryRun) {
    lines.push(`DRY RUN: nothing was changed. ${plural(report.selected, "record")} would change` + `${move ? ` (${report.verb}: ${move})` : ""}.`);
  } else {
    lines.push(
      `${report.verb} by ${report.actor} (reason: ${JSON.stringify(report.reason)}): ` +
        `${report.changed} changed, ${report.failed} failed, ${plural(report.queued, "job")} queued.`,
    );
  }
  if (report.changes.length > 0) {
    const rows = report.changes.map((c) => [
      ...recordCells(c),
      `${c.status} → ${c.to}`,
      String(c.attempts),
      short(c.lastError),
      ...(report.dryRun ? [] : [c.outcome === "failed" ? `failed: ${short(c.error, 80)}` : c.outcome]),
    ]);
    const head = ["stream", "position", "record id", "type", "concern", "status", "attempts", "last error", ...(report.dryRun ? [] : ["result"])];
    lines.push(renderRows(head, rows, style, compact));
  }
  lines.push(`${plural(report.selected, "record")}${report.dryRun ? " would change" : " selected"} (${report.matched} matching).`);
  for (const w of report.warnings) lines.push(`note: ${w}`);
  if (report.dryRun && report.selected > 0) lines.push(`To act, run again with --execute --reason "<why>".`);
  return lines.join("\n");
}

export function formatListing(result: SelectionResult, title = "records", style: OutputStyle = outputStyle()): string {
  const lines: string[] = [];
  if (result.records.length > 0) {
    const head = ["stream", "position", "record id", "type", "concern", "status", "attempts", "since", "last actor", "last error"];
    const rows = result.records.map((r) => [...recordCells(r), r.status, String(r.attempts), formatDuration(r.ageMs), r.lastActor ?? "", short(r.lastError)]);
    lines.push(renderRows(head, rows, style, compact));
  }
  lines.push(`${plural(result.records.length, title.replace(/s$/, ""), title)}${result.limited ? ` shown of ${result.matched} matching (raise --limit)` : ""}.`);
  return lines.join("\n");
}

export function formatStuck(report: StuckReport, style: OutputStyle = outputStyle()): string {
  return [
    `Running for longer than ${formatDuration(report.olderThanMs)} (a worker may have died holding them; see cancel-running):`,
    formatListing(report.running, "stuck running records", style),
    "",
    "Failed, waiting for an operator (see redrive-failed, archive-failed):",
    formatListing(report.failed, "failed records", style),
  ].join("\n");
}

export function formatSwitch(report: SwitchReport, style: OutputStyle = outputStyle()): string {
  const lines: string[] = [];
  lines.push(
    report.dryRun
      ? `DRY RUN: nothing was changed. ${report.verb} would switch ${plural(report.switches.filter((s) => s.changes).length, "stream")}.`
      : `${report.verb} by ${report.actor} (reason: ${JSON.stringify(report.reason)}).`,
  );
  const state = (d: boolean) => (d ? "disabled" : "enabled");
  const rows = report.switches.map((s) => [
    s.stream,
    s.concern,
    state(s.wasDisabled),
    s.changes ? state(s.disabled) : `${state(s.disabled)} (unchanged)`,
    String(s.waiting),
    ...(report.dryRun ? [] : [String(s.requeued)]),
  ]);
  lines.push(renderRows(["stream", "concern", "now", "after", "waiting records", ...(report.dryRun ? [] : ["requeued"])], rows, style, compact));
  if (report.dryRun && report.switches.some((s) => s.changes)) lines.push(`To act, run again with --execute --reason "<why>".`);
  return lines.join("\n");
}

/** A resend: per channel, the failed operation, its old destination and the new one (or why it is skipped). */
export function formatResend(report: ResendReport, style: OutputStyle = outputStyle()): string {
  const lines: string[] = [];
  const usable = report.channels.filter((c) => c.skipped === null);
  const about =
    `notification ${report.notificationId} (entity ${report.entityId}` +
    `${report.entityVersion === null ? ", which no longer exists" : `, as it is now: version ${report.entityVersion}`}; ${report.outcome.type})`;
  if (report.dryRun) {
    lines.push(`DRY RUN: nothing was changed. A resend of ${about} would prepare ${plural(usable.length, "channel")} again:`);
  } else {
    lines.push(
      `resend of ${about} asked by ${report.actor} (reason: ${JSON.stringify(report.reason)}): ` +
        `${report.request!.stream} #${report.request!.position}; internal_operation_bot prepares it.`,
    );
  }
  const rows = report.channels.map((c) => [
    c.channel,
    `${c.previous.operationId} (${c.previous.stream} #${c.previous.position})`,
    // The failure a resend replaces is archived with it (the dry run shows what would be).
    c.previous.status === "Failed" && c.skipped === null ? "Failed → ArchivedAfterFailure" : c.previous.status,
    short(c.previous.error, 50),
    c.previous.destination,
    c.destination ?? `skipped: ${c.skipped}`,
    c.operationId ?? "",
  ]);
  lines.push(renderRows(["channel", "failed operation", "status", "error", "old destination", "new destination", "new operation"], rows, style, compact));
  for (const c of report.channels) {
    lines.push(`${c.channel}: ${c.previous.destination} → ${c.destination ?? `(skipped: ${c.skipped})`}`);
  }
  for (const w of report.warnings) lines.push(`note: ${w}`);
  if (report.dryRun && usable.length > 0) lines.push(`To act, run again with --execute --reason "<why>".`);
  if (!report.dryRun) lines.push(`Follow it with: npm run audit -- notification ${report.notificationId}`);
  return lines.join("\n");
}
