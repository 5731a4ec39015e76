import { get } from "./api.js";
import { openAction } from "./actions.js";
import { badge, cell, fill, h, table, time } from "./dom.js";

// Failures waiting: failed records grouped by channel and error
// (GET /v1/admin/failures), each group and each record with its repairs,
// which go through the same library as `npm run redrive`.

export async function failuresPage(main, me) {
  const content = h("div");
  fill(main, h("h1", {}, "Failures waiting"), me.can("admin") ? null : h("p", { class: "notice" }, "Your key reads only: repairs need an admin key."), content);

  async function load() {
    const answer = await get("/v1/admin/failures");
    const admin = me.can("admin");
    const actions = (host, title, body, verbs) =>
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
                      onDone: load,
                      resendLabel: verbs.find(([, v]) => v === "resend")?.[0],
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
          ["Tracking id", "Record", "Attempts", "Failed since", "Repair"],
          g.records.map((r) => {
            const rowHost = h("div");
            const selection = { notification: r.id, stream: r.stream, concern: r.concern };
            return h(
              "tr",
              {},
              cell("Tracking id", h("a", { href: `#/notifications/${r.id}`, class: "mono" }, r.id)),
              cell("Record", h("span", { class: "mono" }, `${r.stream} #${r.position}`), h("div", { class: "muted" }, r.type)),
              cell("Attempts", String(r.attempts)),
              cell("Failed since", time(r.since)),
              cell(
                "Repair",
                actions(rowHost, `record ${r.stream} #${r.position}`, selection, [
                  ["Re-drive…", "redrive-failed"],
                  ...(g.channel ? [["Resend to current details…", "resend"]] : []),
                  ["Archive…", "archive-failed"],
                ]),
                rowHost,
              ),
            );
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
      answer.archived?.count
        ? h(
            "p",
            { class: "muted", id: "archived" },
            `${answer.archived.count} failure${answer.archived.count === 1 ? " was" : "s were"} archived by an operator in the last ${answer.archived.days} days (the latest `,
            time(answer.archived.lastAt),
            "): archived records wait for nothing, and stay in their notifications' stories with who archived them and why.",
          )
        : null,
      h("h2", {}, `Stuck running (${answer.running.length})`),
      answer.running.length === 0
        ? h("p", { class: "muted" }, "No record has been running for longer than 10 minutes.")
        : [
            runningHost,
            table(
              "Records stuck running",
              ["Tracking id", "Record", "Concern", "State", "Since", "Repair"],
              answer.running.map((r) =>
                h(
                  "tr",
                  {},
                  cell("Tracking id", h("a", { href: `#/notifications/${r.id}`, class: "mono" }, r.id)),
                  cell("Record", h("span", { class: "mono" }, `${r.stream} #${r.position}`)),
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
}
