/* global location */
import { api, get } from "./api.js";
import { announce, cell, field, fill, h, isoToLocal, json, localToIso, table, time } from "./dom.js";

// Entities: a list with a filter (GET /v1/entities); one entity's contact
// details and preferences now, every version since, the version in force at
// a moment, and editing through PUT /v1/entities/:id.

const KINDS = ["user", "team", "service"];
const FILTER_DELAY_MS = 250;

/** Every entity by id, a page at a time, filtered by text (id, name or email) and kind as the operator types. */
async function entityList(content) {
  const text = h("input", { type: "search", id: "entity-filter", name: "q", placeholder: "part of an id, name or email", autocomplete: "off" });
  const kind = h(
    "select",
    { id: "entity-kind", name: "kind" },
    h("option", { value: "" }, "any"),
    KINDS.map((k) => h("option", { value: k }, k)),
  );
  const tbody = h("tbody");
  const status = h("p", { class: "muted", role: "status" });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  fill(
    content,
    h("h2", {}, "All entities"),
    h("div", { class: "row", role: "search", "aria-label": "Filter entities" }, field("Filter (id, name or email)", text), field("Kind", kind)),
    status,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "responsive", id: "entities" },
        h("caption", { class: "visually-hidden" }, "Entities by id"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Id", "Name", "Kind", "Email", "Slack", "Version"].map((t) => h("th", { scope: "col" }, t)),
          ),
        ),
        tbody,
      ),
    ),
    more,
  );
  const row = (v) =>
    h(
      "tr",
      { "data-id": v.entity.id },
      cell("Id", h("a", { href: `#/entities/${encodeURIComponent(v.entity.id)}`, class: "mono" }, v.entity.id)),
      cell("Name", v.entity.name),
      cell("Kind", v.entity.kind),
      cell("Email", v.entity.email ?? h("span", { class: "muted" }, "—")),
      cell("Slack", v.entity.slack ?? h("span", { class: "muted" }, "—")),
      cell("Version", String(v.version), h("div", { class: "muted" }, "changed ", time(v.recordedAt))),
    );
  let next = null;
  let ticket = 0;
  const query = () => ({ q: text.value.trim() || undefined, kind: kind.value || undefined, limit: 50 });
  async function load() {
    const mine = ++ticket;
    try {
      const page = await get("/v1/entities", query());
      if (mine !== ticket) return;
      fill(tbody, page.items.length ? page.items.map(row) : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No entity matches.")));
      next = page.next;
      more.hidden = !next;
      status.textContent = `${page.items.length}${next ? "+" : ""} entit${page.items.length === 1 && !next ? "y" : "ies"}`;
    } catch (error) {
      if (mine === ticket) fill(tbody, h("tr", {}, h("td", { colspan: 6, class: "error", role: "alert" }, error.message)));
    }
  }
  more.addEventListener("click", async () => {
    const page = await get("/v1/entities", { ...query(), after: next });
    tbody.append(...page.items.map(row));
    next = page.next;
    more.hidden = !next;
  });
  let timer = null;
  text.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => void load(), FILTER_DELAY_MS);
  });
  kind.addEventListener("change", () => void load());
  await load();
  return () => clearTimeout(timer);
}

export async function entitiesPage(main, me, id) {
  const idInput = h("input", { name: "entity", id: "entity-id", value: id ?? "", required: true });
  const form = h(
    "form",
    {
      class: "row",
      role: "search",
      onsubmit: (e) => {
        e.preventDefault();
        location.hash = `#/entities/${encodeURIComponent(idInput.value.trim())}`;
      },
    },
    field("Entity id", idInput),
    h("button", { type: "submit" }, "Open"),
  );
  const content = h("div");
  fill(main, h("h1", {}, id ? `Entity ${id}` : "Entities"), form, content);
  if (!me.can("entities")) {
    fill(content, h("p", { class: "notice" }, "Your key cannot read entities: that needs the entities (or admin) scope."));
    return;
  }
  if (!id) return entityList(content);

  async function load() {
    let current;
    try {
      current = await get(`/v1/entities/${encodeURIComponent(id)}`);
    } catch (error) {
      fill(content, h("p", { class: "error", role: "alert" }, error.message));
      return;
    }
    const history = await get(`/v1/entities/${encodeURIComponent(id)}/history`);
    const e = current.entity;
    const at = h("input", { type: "datetime-local", step: 1, id: "entity-at", required: true, value: isoToLocal(new Date().toISOString()) });
    const atOut = h("div", { "aria-live": "polite" });
    const editor = h(
      "textarea",
      { id: "entity-json", rows: 10, class: "mono", spellcheck: "false" },
      JSON.stringify({ kind: e.kind, name: e.name, email: e.email, slack: e.slack, preferences: e.preferences }, null, 2),
    );
    const editOut = h("p", { role: "status" });
    fill(
      content,
      h("h2", {}, `Now (version ${current.version}, changed `, time(current.recordedAt), ` by ${current.changedBy})`),
      h(
        "dl",
        { class: "kv" },
        h("dt", {}, "Name"),
        h("dd", {}, `${e.name} (${e.kind})`),
        h("dt", {}, "Email"),
        h("dd", {}, e.email ?? "—"),
        h("dt", {}, "Slack"),
        h("dd", {}, e.slack ?? "—"),
        h("dt", {}, "Channels"),
        h("dd", {}, e.preferences.channels.join(", ") || "none"),
        h("dt", {}, "Opted out of"),
        h("dd", {}, e.preferences.optedOut.join(", ") || "nothing"),
        h("dt", {}, "Delivery"),
        h("dd", {}, e.preferences.delivery),
      ),
      h("p", {}, h("a", { href: `#/activity?entityId=${encodeURIComponent(id)}` }, "This entity's notifications")),
      h("h2", {}, "What did it allow then?"),
      h(
        "form",
        {
          class: "row",
          onsubmit: async (ev) => {
            ev.preventDefault();
            try {
              const v = await get(`/v1/entities/${encodeURIComponent(id)}/history`, { at: localToIso(at.value) });
              fill(atOut, h("p", {}, `Version ${v.version}, in force since `, time(v.recordedAt), ` (by ${v.changedBy})`), json(v.entity));
            } catch (err) {
              fill(atOut, h("p", { class: "error", role: "alert" }, err.message));
            }
          },
        },
        field("At", at),
        h("button", { type: "submit" }, "Show"),
      ),
      atOut,
      h("h2", {}, `History (${history.versions.length} versions)`),
      table(
        "Versions",
        ["Version", "When", "Change", "Details"],
        [...history.versions]
          .reverse()
          .map((v) =>
            h(
              "tr",
              {},
              cell("Version", String(v.version)),
              cell("When", time(v.recordedAt)),
              cell(
                "Change",
                v.type === "EntityRemovedEvent" ? "removed" : `changed: ${(v.payload.changed ?? []).join(", ")}`,
                v.payload.changedBy ? h("div", { class: "muted" }, `by ${v.payload.changedBy}`) : null,
              ),
              cell("Details", h("details", {}, h("summary", {}, "Payload"), json(v.payload))),
            ),
          ),
      ),
      me.can("entities")
        ? [
            h("h2", {}, "Edit"),
            h(
              "form",
              {
                onsubmit: async (ev) => {
                  ev.preventDefault();
                  let body;
                  try {
                    body = JSON.parse(editor.value);
                  } catch (err) {
                    editOut.textContent = `Not JSON: ${err.message}`;
                    return;
                  }
                  try {
                    const r = await api("PUT", `/v1/entities/${encodeURIComponent(id)}`, body);
                    announce(`Entity ${r.result}`);
                    await load();
                  } catch (err) {
                    editOut.textContent = err.message;
                  }
                },
              },
              field("The entity as JSON (kind, name, email, slack, preferences)", editor),
              h("button", { type: "submit" }, "Save"),
              editOut,
            ),
          ]
        : null,
    );
  }
  await load();
}
