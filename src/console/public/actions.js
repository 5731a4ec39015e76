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
 * A re-drive's dry run over records that failed permanently (a 5.1.1 bounce):
 * executing it sends the same operation to the same address again. Says so
 * beside the buttons, in their own words.
 */
function permanentWarning(report, executeLabel, resendLabel) {
  if (report.verb !== "redrive-failed" || !report.dryRun) return null;
  const permanent = report.changes.filter((c) => c.failure === "permanent");
  if (permanent.length === 0) return null;
  const errors = [...new Set(permanent.map((c) => c.lastError).filter(Boolean))];
  const where = resendLabel ? `use “${resendLabel}” here` : `use “Resend to current details…” on the notification's page`;
  return h(
    "p",
    { class: "notice bad", id: `permanent-${Math.random().toString(36).slice(2)}` },
    h("strong", {}, permanent.length === report.changes.length ? "This failure is permanent." : `${permanent.length} of these failures are permanent.`),
    errors.length ? [" (", h("span", { class: "mono" }, errors.join("; ")), ")"] : null,
    ` “${executeLabel}” would send the same message to the same address again, and it will most likely fail the same way. Correct the entity's contact details first (Entities page), then ${where}.`,
  );
}

/**
 * Open the panel for one action inside `host`: runs the dry run at once.
 * `request` is [method, path, body]; the execute request adds execute and reason.
 * `onDone` runs after an execution (e.g. to reload the page's data).
 * `resendLabel`: the label of the page's resend button for the same records, if it has one (named in warnings).
 * The keyboard focus moves to the panel's heading when it opens, and stays in the panel.
 */
export async function openAction(host, { title, request, onDone, resendLabel }) {
  const [method, path, body] = request;
  const titleId = `action-${Math.random().toString(36).slice(2)}`;
  const heading = h("h3", { id: titleId, tabindex: "-1" }, `${title}: dry run`);
  // The heading stays in the panel while its content changes: taking it out and back would drop the focus on the page's body.
  const content = h("div", {}, h("p", { class: "muted" }, "Working out what would change…"));
  const panel = h("section", { class: "panel", "aria-labelledby": titleId, role: "region" }, heading, content);
  const close = () => fill(host);
  fill(host, panel);
  heading.focus();
  let report;
  try {
    report = await api(method, path, body);
  } catch (error) {
    fill(content, h("p", { class: "error", role: "alert" }, error.message), h("button", { type: "button", class: "secondary", onclick: close }, "Close"));
    return;
  }
  const nothing = report.verb === "resend" ? report.channels.every((c) => c.skipped !== null) : report.selected === 0;
  // aria-required, not required: the browser's own bubble would stop the submit before the page can say why.
  const reason = h("textarea", { name: "reason", id: `${titleId}-reason`, rows: 2, "aria-required": "true", maxlength: 2000 });
  const error = h("p", { class: "error", role: "alert" });
  const executeLabel = "Execute";
  const warning = permanentWarning(report, executeLabel, resendLabel);
  const execute = h("button", { type: "submit", class: "danger", disabled: nothing, "aria-describedby": warning?.id }, executeLabel);
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
            content,
            h("p", { class: "notice", role: "status" }, `Executed by ${done.actor}, reason: “${done.reason}”.`),
            describe(done),
            h("button", { type: "button", class: "secondary", onclick: close }, "Close"),
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
    warning,
    h("div", { class: "row" }, execute, h("button", { type: "button", class: "secondary", onclick: close }, "Cancel")),
    error,
  );
  fill(
    content,
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
  announce(`${title}: dry run ready${warning ? ": the failure is permanent" : ""}`);
}
