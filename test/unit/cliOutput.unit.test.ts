import { Writable } from "node:stream";
import { formatAction, formatListing } from "../../src/admin/format";
import type { ActionReport } from "../../src/admin/redrive";
import type { SelectedRecord } from "../../src/admin/selection";
import { columns, renderRecord, renderTable } from "../../src/audit/format";
import { PLAIN, outputStyle, renderRows, widthOf, type OutputStyle } from "../../src/cli/table";
import { announce } from "../../src/logging/announce";
import { createLogger, logDestination } from "../../src/logging/logger";

const ANSI = /\u001b\[/;
const terminal = (columns: number): OutputStyle => ({ width: columns, colour: true });

const record: SelectedRecord = {
  stream: "slack.operations",
  position: 42,
  id: "0b4c6a57-9c1e-4a8e-bb51-3f0f5b1d2e77",
  type: "SendSlackMessageOp",
  concern: "slack_bot",
  status: "Failed",
  attempts: 5,
  claimedBy: null,
  lastAction: "fail",
  lastActor: "slack_bot",
  lastReason: null,
  lastError: "channel_not_found",
  updatedAt: new Date("2026-12-01T10:00:00Z"),
  recordedAt: new Date("2026-12-01T09:00:00Z"),
  ageMs: 3_600_000,
  streamDisabled: false,
};

describe("how the tools decide on layout and colour", () => {
  it("a terminal: its width (80 when it does not say) and colour unless NO_COLOR; a pipe: no limit, no colour", () => {
    expect(outputStyle({ isTTY: true, columns: 120 }, {})).toEqual({ width: 120, colour: true });
    expect(outputStyle({ isTTY: true }, {})).toEqual({ width: 80, colour: true });
    expect(outputStyle({ isTTY: true, columns: 120 }, { NO_COLOR: "1" })).toEqual({ width: 120, colour: false });
    expect(outputStyle({ isTTY: false, columns: 120 }, {})).toEqual({ width: null, colour: false });
    expect(outputStyle({}, {})).toEqual(PLAIN);
  });
});

describe("rows for people", () => {
  const head = ["stream", "position", "record id", "type", "concern", "status"];
  const rows = [["slack.operations", "42", record.id, "SendSlackMessageOp", "slack_bot", "Failed"]];

  it("a table when it fits the width", () => {
    const text = renderRows(head, rows, { width: 200, colour: false });
    expect(text).toMatch(/│ slack\.operations │ 42 /);
    expect(widthOf(text)).toBeLessThanOrEqual(200);
  });

  it("one `field: value` block per row when it would not fit, every line within the width", () => {
    const two = [...rows, ["email.operations", "7", "other-id", "SendEmailOp", "email_bot", "Running"]];
    const text = renderRows(head, two, { width: 60, colour: false });
    expect(text).not.toContain("│");
    expect(text.split("\n")).toEqual([
      "-[ 1 ]",
      "stream   : slack.operations",
      "position : 42",
      `record id: ${record.id}`,
      "type     : SendSlackMessageOp",
      "concern  : slack_bot",
      "status   : Failed",
      "-[ 2 ]",
      "stream   : email.operations",
      "position : 7",
      "record id: other-id",
      "type     : SendEmailOp",
      "concern  : email_bot",
      "status   : Running",
    ]);
    expect(widthOf(text)).toBeLessThanOrEqual(60);
  });

  it("colour (bold headings) only when asked; never cli-table3's own colours", () => {
    expect(renderRows(head, rows, PLAIN)).not.toMatch(ANSI);
    expect(renderRows(head, rows, { width: null, colour: true })).toContain("\u001b[1mstream\u001b[22m");
    expect(renderRows(head, rows, { width: null, colour: true })).not.toMatch(/\u001b\[(3\d|9\d)m/);
    expect(renderRows(head, rows, terminal(40))).toContain("\u001b[1mstream   \u001b[22m: slack.operations");
  });
});

describe("npm run audit's tables", () => {
  interface Row {
    at: Date;
    stream: string;
    error: string | null;
  }
  const cols = columns<Row>("at", "stream", "error");
  const auditRows: Row[] = [{ at: new Date("2026-12-01T10:00:00Z"), stream: "email.operations", error: "550 mailbox unavailable\nfor good" }];

  it("a table with its row count, vertical on a narrow terminal, and no escape codes when piped", () => {
    expect(renderTable(auditRows, cols, PLAIN)).toMatch(/│ 2026-12-01T10:00:00\.000Z │ email\.operations │ 550 mailbox unavailable for good │\n.*\n\(1 row\)$/);
    const narrow = renderTable(auditRows, cols, { width: 50, colour: false });
    expect(narrow).toBe(["-[ 1 ]", "at    : 2026-12-01T10:00:00.000Z", "stream: email.operations", "error : 550 mailbox unavailable for good", "(1 row)"].join("\n"));
    expect(renderTable([], cols, { width: 10, colour: false })).toBe("(0 rows)");
    expect(renderRecord({ tracking_id: "abc", failed_channels: ["slack"] }, PLAIN)).toBe("tracking_id    : abc\nfailed_channels: slack");
  });
});

describe("npm run redrive's reports", () => {
  const report: ActionReport = {
    verb: "redrive-failed",
    dryRun: true,
    actor: "alice",
    reason: null,
    matched: 1,
    selected: 1,
    limited: false,
    changed: 0,
    failed: 0,
    queued: 0,
    changes: [{ ...record, to: "AvailableAfterFailure", requeue: true, outcome: "would change", error: null, details: null }],
    warnings: [],
  };

  it("the listing and an action's changes turn vertical on an 80-column terminal, and every field line fits", () => {
    for (const text of [formatListing({ records: [record], matched: 1, limited: false }, "records", terminal(80)), formatAction(report, terminal(80))]) {
      expect(text).toContain("-[ 1 ]");
      expect(text).toMatch(/status\s*\u001b\[22m: Failed/);
      const fields = text.split("\n").filter((line) => line.includes("\u001b[22m: "));
      expect(fields.length).toBeGreaterThanOrEqual(8);
      for (const line of fields) expect(widthOf(line)).toBeLessThanOrEqual(80);
    }
  });

  it("piped: the whole table, no escape codes", () => {
    const text = formatAction(report, PLAIN);
    expect(text).toContain("Failed → AvailableAfterFailure");
    expect(text).toContain(`│ slack.operations │ 42       │ ${record.id} │`);
    expect(text).not.toMatch(ANSI);
  });
});

/** A stream that says it is (or is not) a terminal, keeping what is written. */
function fakeStream(isTTY: boolean) {
  const chunks: string[] = [];
  const stream = Object.assign(
    new Writable({
      write(chunk, _encoding, done) {
        chunks.push(String(chunk));
        done();
      },
    }),
    { isTTY, columns: 100 },
  );
  return { stream, text: () => chunks.join("") };
}

describe("logs and the development key", () => {
  it("a terminal gets pino-pretty's lines (no colour with NO_COLOR); anything else JSON lines", () => {
    const tty = fakeStream(true);
    createLogger("info", "t", logDestination(tty.stream, { NO_COLOR: "1" })).info({ port: 3000 }, "listening");
    expect(tty.text()).toMatch(/INFO \(t\): listening\n\s+port: 3000\n/);
    expect(tty.text()).not.toMatch(ANSI);
    expect(logDestination(fakeStream(false).stream, {})).toBeUndefined();
  });

  it("the key stands alone on its line on a terminal; nothing extra is written to a pipe", () => {
    const tty = fakeStream(true);
    announce("Development API key:", "tdk_secret", tty.stream, {});
    expect(tty.text().split("\n")).toContain("    \u001b[1mtdk_secret\u001b[22m");
    const plain = fakeStream(true);
    announce("Development API key:", "tdk_secret", plain.stream, { NO_COLOR: "1" });
    expect(plain.text().split("\n")).toContain("    tdk_secret");
    const pipe = fakeStream(false);
    announce("Development API key:", "tdk_secret", pipe.stream, {});
    expect(pipe.text()).toBe("");
  });
});
