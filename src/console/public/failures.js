import { followEvents, get } from "./api.js";
import { entityLink, openAction } from "./actions.js";
import { badge, cell, fill, h, table, time } from "./dom.js";

// Failures waiting: failed records grouped by channel and error
// (GET /v1/admin/failures), each group and each record with its repairs,
// which go through the same library as `npm run redrive`.

/** Statuses after which nothing more happens to a notification unless someone acts. */
const SETTLED = ["sent", "partially_sent", "failed", "not_sent"];

/** What an executed repair did, in a sentence. */
function whatWasDone(done) {
  const by = `by ${done.actor}, reason: “${done.reason}”`;
  if (done.verb === "resend") {
    const sent = done.channels.filter((c) => c.skipped === null).map((c) => `${c.channel} to ${c.destination}`);
    return `Resent ${by}: ${sent.join(", ")}. The failure it replaces is closed.`;
  }
  const n = done.changed;
  const records = `${n} record${n === 1 ? "" : "s"}`;
  const failed = done.failed ? ` ${done.failed} could not be changed.` : "";
  switch (done.verb) {
    case "redrive-failed":
      return `Re-driven ${by}: ${records} queued again, to the same destination as before.${failed}`;
    case "archive-failed":
      return `Archived ${by}: ${records}; ${n === 1 ? "it waits" : "they wait"} for nothing now.${failed}`;
    case "cancel-running":
      return `Cancelled ${by}: ${records}${done.queued ? `, ${done.queued} queued again` : ""}.${failed}`;
    default:
      return `Done ${by}.`;
  }
}

/**
 * Follow the notifications a re-drive or resend sent again, on the live
 * feed: each line says where it is now, and once it is settled whether it
 * was delivered. A status read right after the execution may still be the
 * old failure: it counts as the outcome only once the notification was
 * seen under way, or its view has moved past the version first read.
 */
function followOutcomes(ids, lines) {
  const state = new Map(ids.map((id) => [id, { baseline: null, underway: false, settled: false }]));
  async function check(id) {
    const s = state.get(id);
    if (!s || s.settled) return;
    let view;
    try {
      view = await get(`/v1/notifications/${encodeURIComponent(id)}`);
    } catch (error) {
      fill(lines.get(id), `could not read its status: ${error.message}`);
      return;
    }
    const version = view.version ?? 0;
    if (s.baseline === null) s.baseline = version;
    if (!SETTLED.includes(view.status)) s.underway = true;
    const line = lines.get(id);
    if (SETTLED.includes(view.status) && (s.underway || version > s.baseline)) {
      s.settled = true;
      const errors = (view.channels ?? []).filter((c) => c.lastError).map((c) => `${c.channel}: ${c.lastError}`);
      if (view.status === "sent") fill(line, badge("sent"), " delivered.");
      else fill(line, badge(view.status), " not delivered", errors.length || view.failureReason ? `: ${view.failureReason ?? errors.join("; ")}` : "", ".");
      line.dataset.outcome = view.status;
    } else {
      fill(line, badge(view.status), " waiting for the outcome…");
    }
  }
  const stop = followEvents((event) => {
    if (state.has(event.id)) void check(event.id);
  });
  // The view follows the events a moment later: look again while anything is unsettled, at most for two minutes.
  const started = Date.now();
  let timer = null;
  const again = async () => {
    await Promise.all(ids.map(check));
    if ([...state.values()].some((s) => !s.settled) && Date.now() - started < 120_000) timer = setTimeout(again, 1000);
  };
  void stop.ready.then(again);
  return () => {
    stop();
    clearTimeout(timer);
  };
}

/** Failures operators closed lately: archived, and apart from them those resent to current details (a resend archives the failure it replaces). */
function closedLately(archived) {
  const resent = archived?.resent?.count ?? 0;
  if (!archived?.count && !resent) return null;
  const were = (n) => `${n} failure${n === 1 ? " was" : "s were"}`;
  const days = ` in the last ${archived.days} days (the latest `;
  return h(
    "p",
    { class: "muted", id: "archived" },
    archived.count ? [`${were(archived.count)} archived by an operator${days}`, time(archived.lastAt), ")"] : null,
    resent
      ? [
          archived.count ? `, and ${resent} ${resent === 1 ? "was" : "were"} resent to current details (the latest ` : `${were(resent)} resent to current details${days}`,
          time(archived.resent.lastAt),
          ")",
        ]
      : null,
    ": they wait for nothing, and stay in their notifications' stories with who closed them and why.",
  );
}

export async function failuresPage(main, me) {
  const content = h("div");
  // What the last repair did: outside the list, so the list's reload after it does not take it away; the focus goes to it.
  const result = h("div", { id: "repair-result", role: "status", "aria-live": "polite", tabindex: "-1" });
  fill(main, h("h1", {}, "Failures waiting"), me.can("admin") ? null : h("p", { class: "notice" }, "Your key reads only: repairs need an admin key."), result, content);
  let stopFollowing = () => {};

  async function done(report) {
    stopFollowing();
    const ids = report.verb === "resend" ? [report.notificationId] : [...new Set(report.changes.filter((c) => c.outcome === "changed").map((c) => c.id))];
    const follow = report.verb === "resend" || report.verb === "redrive-failed" || (report.verb === "cancel-running" && report.queued > 0);
    const lines = new Map(ids.map((id) => [id, h("span", { class: "outcome" }, follow ? "waiting for the outcome…" : "")]));
    fill(
      result,
      h(
        "div",
        { class: "notice" },
        h("p", {}, h("strong", {}, whatWasDone(report))),
        ids.length
          ? h(
              "ul",
              {},
              ids
                .slice(0, 20)
                .map((id) =>
                  h(
                    "li",
                    { "data-id": id },
                    h("a", { href: `#/notifications/${encodeURIComponent(id)}` }, "The story of ", h("span", { class: "mono" }, id)),
                    follow ? ": " : null,
                    lines.get(id),
                  ),
                ),
            )
          : null,
        h("button", { type: "button", class: "secondary", onclick: () => (stopFollowing(), fill(result)) }, "Dismiss"),
      ),
    );
    if (follow) stopFollowing = followOutcomes(ids.slice(0, 20), lines);
    result.focus();
    // The list reloads below the result: the record repaired leaves it, the result and the focus stay.
    await load();
  }

  async function load() {
    const answer = await get("/v1/admin/failures");
    const admin = me.can("admin");
    const actions = (host, title, body, verbs, entity) =>
      admin
        ? h(
            "div",
            { class: "row" },
            verbs.map(([label, verb]) =>
              h(
                "button",
                {
                  type: "button",
                  class: "secondary",
                  onclick: () =>
                    openAction(host, {
                      title: `${label.replace(/…$/, "")} ${title}`,
                      request: verb === "resend" ? ["POST", "/v1/admin/resend", { notification: body.notification }] : ["POST", `/v1/admin/actions/${verb}`, body],
                      onDone: done,
                      resendLabel: verbs.find(([, v]) => v === "resend")?.[0],
                      redriveLabel: verbs.find(([, v]) => v === "redrive-failed")?.[0],
                      entity,
                    }),
                },
                label,
              ),
            ),
          )
        : null;

    const groups = answer.failed.map((g, i) => {
      const host = h("div");
      const heading = `${g.channel ?? g.stream} · ${g.concern}`;
      return h(
        "section",
        { class: "panel", "aria-labelledby": `group-${i}` },
        h("h2", { id: `group-${i}` }, `${heading}: ${g.count} failed`),
        h("p", { class: "error" }, g.error),
        actions(host, `the ${g.count} record(s) of this group`, { stream: g.stream, concern: g.concern, errorContains: g.error === "(no error recorded)" ? undefined : g.error }, [
          ["Re-drive all…", "redrive-failed"],
          ["Archive all…", "archive-failed"],
        ]),
        host,
        table(
          `Failed records: ${heading}`,
          ["Notification", "Entity", "Recipient", "Record", "Attempts", "Failed since", "Repair"],
          g.records.map((r) => {
            // The record's repair panel opens in a row of its own below it, the table's full width.
            const rowHost = h("div");
            const selection = { notification: r.id, stream: r.stream, concern: r.concern };
            return [
              h(
                "tr",
                {},
                cell("Notification", r.subject ? h("div", { class: "long" }, r.subject) : null, h("a", { href: `#/notifications/${r.id}`, class: "mono" }, r.id)),
                cell("Entity", r.entity ? entityLink(r.entity) : h("span", { class: "muted" }, "—")),
                cell("Recipient", r.destination ? h("span", { class: "mono" }, r.destination) : h("span", { class: "muted" }, "—")),
                cell("Record", h("span", { class: "mono" }, `${r.stream} #${r.position}`), h("div", { class: "muted" }, r.type)),
                cell("Attempts", String(r.attempts)),
                cell("Failed since", time(r.since)),
                cell(
                  "Repair",
                  actions(
                    rowHost,
                    `record ${r.stream} #${r.position}`,
                    selection,
                    [["Re-drive…", "redrive-failed"], ...(g.channel ? [["Resend to current details…", "resend"]] : []), ["Archive…", "archive-failed"]],
                    r.entity,
                  ),
                ),
              ),
              h("tr", { class: "panel-row" }, h("td", { colspan: 7, class: "full" }, rowHost)),
            ];
          }),
        ),
      );
    });

    const runningHost = h("div");
    fill(
      content,
      answer.failed.length === 0
        ? h("p", { class: "notice", role: "status", id: "nothing-waits" }, "Nothing is waiting for an operator: no failed record waits for a repair.")
        : groups,
      closedLately(answer.archived),
      h("h2", {}, `Stuck running (${answer.running.length})`),
      answer.running.length === 0
        ? h("p", { class: "muted" }, "No record has been running for longer than 10 minutes.")
        : [
            runningHost,
            table(
              "Records stuck running",
              ["Tracking id", "Entity", "Record", "Concern", "State", "Since", "Repair"],
              answer.running.map((r) =>
                h(
                  "tr",
                  {},
                  cell("Tracking id", h("a", { href: `#/notifications/${r.id}`, class: "mono" }, r.id)),
                  cell("Entity", r.entity ? entityLink(r.entity) : h("span", { class: "muted" }, "—")),
                  cell("Record", h("span", { class: "mono" }, `${r.stream} #${r.position}`), r.destination ? h("div", { class: "mono muted" }, `to ${r.destination}`) : null),
                  cell("Concern", r.concern),
                  cell("State", badge(r.status)),
                  cell("Since", time(r.since)),
                  cell(
                    "Repair",
                    actions(runningHost, `record ${r.stream} #${r.position}`, { notification: r.id, stream: r.stream, concern: r.concern, requeue: true }, [
                      ["Cancel and queue again…", "cancel-running"],
                    ]),
                  ),
                ),
              ),
            ),
          ],
    );
  }
  await load();
  return () => stopFollowing();
}
