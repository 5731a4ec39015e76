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
            cell("Sent to", h("span", { class: "long" }, c.previous.destination)),
            cell("Error", h("span", { class: "long" }, c.previous.error ?? "")),
            cell("Now to", h("span", { class: "long" }, c.destination ?? `skipped: ${c.skipped}`), c.sameDestination ? h("div", { class: "muted" }, "(the same as before)") : null),
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
              cell("Outcome", c.outcome, c.error ? h("div", { class: "error long" }, c.error) : null),
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
/** A link to an entity's page, by name and id; without an entity, to the Entities page. */
export function entityLink(entity) {
  if (!entity?.id) return h("a", { href: "#/entities" }, "Entities page");
  return h("a", { href: `#/entities/${encodeURIComponent(entity.id)}` }, entity.name ? `${entity.name} (${entity.id})` : entity.id);
}

function permanentWarning(report, executeLabel, resendLabel, entity) {
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
    ` “${executeLabel}” would send the same message to the same address again, and it will most likely fail the same way. Correct the entity's contact details first (`,
    entityLink(entity),
    `), then ${where}.`,
  );
}

const DETAIL = { email: "email address", slack: "Slack destination" };

/**
 * A resend's dry run, said in the console's words (the library's warnings
 * name command-line verbs): a channel skipped, a channel going to the same
 * destination as before, and, when that destination failed permanently (a
 * 5.1.1 bounce), a prominent warning that it would fail again, with a link
 * to the entity to correct first. Returns { warning, notes }: the warning
 * (or null) goes beside the buttons.
 */
function resendNotes(report, executeLabel, redriveLabel) {
  if (report.verb !== "resend" || !report.dryRun) return { warning: null, notes: null };
  const entityLink = () => h("a", { href: `#/entities/${encodeURIComponent(report.entityId)}` }, `entity ${report.entityId}`);
  const doomed = report.channels.filter((c) => c.sameDestination && c.previous.failure === "permanent");
  const notes = [];
  if (report.channels.every((c) => c.skipped !== null)) {
    notes.push(h("li", {}, "Nothing can be resent now: put the ", entityLink(), " right first."));
  } else {
    for (const c of report.channels.filter((p) => p.skipped !== null)) notes.push(h("li", {}, `${c.channel} would be skipped: ${c.skipped}.`));
    for (const c of report.channels.filter((p) => p.sameDestination && p.previous.failure !== "permanent")) {
      notes.push(
        h(
          "li",
          {},
          `${c.channel} would go to the same destination as before (`,
          h("span", { class: "mono" }, c.destination),
          `). If the failure was on the receiving side and is fixed there, “${redriveLabel}” repeats the operation as it was; if the destination is wrong, correct the `,
          entityLink(),
          " first.",
        ),
      );
    }
  }
  const warning = doomed.length
    ? h(
        "div",
        { class: "notice bad prominent", id: `same-${Math.random().toString(36).slice(2)}` },
        h("p", {}, h("strong", {}, `This would fail again: correct the entity's ${doomed.map((c) => DETAIL[c.channel] ?? `${c.channel} destination`).join(" and ")} first.`)),
        doomed.map((c) =>
          h(
            "p",
            {},
            `The ${c.channel} to `,
            h("span", { class: "mono" }, c.destination),
            " failed permanently",
            c.previous.error ? [" (", h("span", { class: "mono" }, c.previous.error), ")"] : null,
            `, and the entity still has that ${DETAIL[c.channel] ?? "destination"}: “${executeLabel}” would send it there again.`,
          ),
        ),
        h("p", {}, "Open the ", entityLink(), ", correct it, then come back and resend."),
      )
    : null;
  return { warning, notes: notes.length ? h("ul", { class: "notice" }, notes) : null };
}

/**
 * Open the panel for one action inside `host`: runs the dry run at once.
 * `request` is [method, path, body]; the execute request adds execute and reason.
 * `onDone` runs after an execution (e.g. to reload the page's data).
 * `resendLabel`: the label of the page's resend button for the same records, if it has one (named in warnings).
 * `entity`: { id, name } of the records' entity, when they have one: warnings link to its page.
 * The keyboard focus moves to the panel's heading when it opens, and stays in the panel.
 */
export async function openAction(host, { title, request, onDone, resendLabel, redriveLabel = "Re-drive…", entity }) {
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
  const resend = resendNotes(report, executeLabel, redriveLabel);
  const warning = permanentWarning(report, executeLabel, resendLabel, entity) ?? resend.warning;
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
    // A resend's warnings are said in the console's words (resendNotes), from the same report.
    report.verb === "resend"
      ? resend.notes
      : report.warnings?.length
        ? h(
            "ul",
            { class: "notice" },
            report.warnings.map((w) => h("li", {}, w)),
          )
        : null,
    form,
  );
  announce(`${title}: dry run ready${warning ? (resend.warning ? ": this would fail again" : ": the failure is permanent") : ""}`);
}
