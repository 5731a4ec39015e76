import { api } from "./api.js";
import { announce, badge, cell, field, fill, h, table } from "./dom.js";

// Every repair is two steps, as with `npm run redrive`: a dry run that says
// what would change, then the same request with execute and a reason. The
// panel shows the first, asks for the second, and shows what changed.

/** What a report of POST /v1/admin/actions/:verb or /v1/admin/resend says, as a table. */
function describe(report) {
  if (report.verb === "resend") {
    return [
      table(
        "Channels to resend",
        ["Channel", "Failed operation sent to", "Its error", "Would now go to"],
        report.channels.map((c) =>
          h(
            "tr",
            {},
            cell("Channel", c.channel),
            cell("Sent to", c.previous.destination),
            cell("Error", c.previous.error ?? ""),
            cell("Now to", c.destination ?? `skipped: ${c.skipped}`),
          ),
        ),
      ),
      report.request ? h("p", {}, `Resend requested (${report.request.stream} #${report.request.position}).`) : null,
    ];
  }
  const counts = report.dryRun ? `${report.selected} record(s) would change` : `${report.changed} changed, ${report.failed} failed, ${report.queued} queued again`;
  return [
    h("p", {}, counts, report.limited ? ` (of ${report.matched} matching)` : ""),
    report.changes.length
      ? table(
          "Records",
          ["Record", "Tracking id", "Concern", "Change", "Outcome"],
          report.changes.map((c) =>
            h(
              "tr",
              {},
              cell("Record", h("span", { class: "mono" }, `${c.stream} #${c.position}`), h("div", { class: "muted" }, c.type)),
              cell("Tracking id", h("a", { href: `#/notifications/${c.id}`, class: "mono" }, c.id)),
              cell("Concern", c.concern),
              cell("Change", badge(c.status), " → ", badge(c.to), c.requeue ? " (queued again)" : ""),
              cell("Outcome", c.outcome, c.error ? h("div", { class: "error" }, c.error) : null),
            ),
          ),
        )
      : h("p", { class: "muted" }, "Nothing matches: nothing would change."),
  ];
}

/**
 * Open the panel for one action inside `host`: runs the dry run at once.
 * `request` is [method, path, body]; the execute request adds execute and reason.
 * `onDone` runs after an execution (e.g. to reload the page's data).
 */
export async function openAction(host, { title, request, onDone }) {
  const [method, path, body] = request;
  const titleId = `action-${Math.random().toString(36).slice(2)}`;
  const panel = h("section", { class: "panel", "aria-labelledby": titleId, role: "region" });
  fill(host, panel);
  const heading = h("h3", { id: titleId, tabindex: "-1" }, `${title}: dry run`);
  fill(panel, heading, h("p", { class: "muted" }, "Working out what would change…"));
  heading.focus();
  let report;
  try {
    report = await api(method, path, body);
  } catch (error) {
    fill(panel, heading, h("p", { class: "error", role: "alert" }, error.message), h("button", { type: "button", class: "secondary", onclick: () => fill(host) }, "Close"));
    return;
  }
  const nothing = report.verb === "resend" ? report.channels.every((c) => c.skipped !== null) : report.selected === 0;
  // aria-required, not required: the browser's own bubble would stop the submit before the page can say why.
  const reason = h("textarea", { name: "reason", id: `${titleId}-reason`, rows: 2, "aria-required": "true", maxlength: 2000 });
  const error = h("p", { class: "error", role: "alert" });
  const execute = h("button", { type: "submit", class: "danger", disabled: nothing }, "Execute");
  const form = h(
    "form",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        if (!reason.value.trim()) {
          error.textContent = "A reason is required: it is kept in the handling history.";
          reason.focus();
          return;
        }
        execute.disabled = true;
        try {
          const done = await api(method, path, { ...body, execute: true, reason: reason.value.trim() });
          heading.textContent = `${title}: done`;
          fill(
            panel,
            heading,
            h("p", { class: "notice", role: "status" }, `Executed by ${done.actor}, reason: “${done.reason}”.`),
            describe(done),
            h("button", { type: "button", class: "secondary", onclick: () => fill(host) }, "Close"),
          );
          heading.focus();
          announce(`${title} executed`);
          await onDone?.(done);
        } catch (err) {
          error.textContent = err.message;
          execute.disabled = false;
        }
      },
    },
    field("Reason (required; kept in the handling history)", reason),
    h("div", { class: "row" }, execute, h("button", { type: "button", class: "secondary", onclick: () => fill(host) }, "Cancel")),
    error,
  );
  fill(
    panel,
    heading,
    describe(report),
    report.warnings?.length
      ? h(
          "ul",
          { class: "notice" },
          report.warnings.map((w) => h("li", {}, w)),
        )
      : null,
    form,
  );
  announce(`${title}: dry run ready`);
}
