/* global location */
import { api, get } from "./api.js";
import { diffFields } from "./diff.js";
import { announce, cell, field, fill, h, json, table, time } from "./dom.js";

// Templates: every template with its current version (GET /v1/templates);
// one template's versions (GET /v1/templates/:key), a field-by-field diff of
// any two of them (GET /v1/templates/:key/versions/:n, diffed here), a live
// preview with sample data (POST /v1/templates/:key/preview) and, for an
// admin key, a new version (PUT /v1/templates/:key).

const PREVIEW_DELAY_MS = 300;

export async function templatesPage(main, me, key, params) {
  if (key) return templatePage(main, me, key, params);
  const filter = h("input", { type: "search", id: "template-filter", name: "filter", placeholder: "key or description", autocomplete: "off" });
  const tbody = h("tbody");
  const count = h("p", { class: "muted", role: "status" });
  fill(
    main,
    h("h1", {}, "Templates"),
    h("div", { class: "row", role: "search" }, field("Filter templates", filter)),
    count,
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "responsive", id: "templates" },
        h("caption", { class: "visually-hidden" }, "Templates by key"),
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["Key", "Description", "Current version", "Updated", "Locales"].map((t) => h("th", { scope: "col" }, t)),
          ),
        ),
        tbody,
      ),
    ),
    me.can("admin") ? newTemplateForm() : null,
  );
  const items = [];
  let after;
  do {
    const page = await get("/v1/templates", { after, limit: 500 });
    items.push(...page.items);
    after = page.next ?? undefined;
  } while (after);

  const show = () => {
    const text = filter.value.trim().toLowerCase();
    const shown = items.filter((t) => !text || t.key.includes(text) || (t.description ?? "").toLowerCase().includes(text));
    count.textContent = items.length === 0 ? "" : `${shown.length} of ${items.length} template${items.length === 1 ? "" : "s"}`;
    fill(
      tbody,
      shown.length
        ? shown.map((t) =>
            h(
              "tr",
              { "data-key": t.key },
              cell("Key", h("a", { href: `#/templates/${encodeURIComponent(t.key)}`, class: "mono" }, t.key)),
              cell("Description", t.description ?? h("span", { class: "muted" }, "—")),
              cell("Current version", String(t.version)),
              cell("Updated", time(t.updatedAt), h("div", { class: "muted" }, `by ${t.updatedBy}`)),
              cell("Locales", t.locales.join(", ") || h("span", { class: "muted" }, "default only")),
            ),
          )
        : h("tr", {}, h("td", { colspan: 5, class: "muted" }, items.length ? "No template matches." : "No template yet: PUT /v1/templates/:key records the first version.")),
    );
  };
  filter.addEventListener("input", show);
  show();
}

/** An admin's first version of a new template: a key, then the template page's editor. */
function newTemplateForm() {
  const keyInput = h("input", { id: "new-template-key", name: "key", required: true, pattern: "[a-z0-9][a-z0-9._\\-]*", autocomplete: "off" });
  return [
    h("h2", {}, "New template"),
    h(
      "form",
      {
        class: "row",
        onsubmit: (e) => {
          e.preventDefault();
          location.hash = `#/templates/${encodeURIComponent(keyInput.value.trim())}?new`;
        },
      },
      field("Key (lower-case letters, digits, . _ -)", keyInput),
      h("button", { type: "submit" }, "Write its first version"),
    ),
  ];
}

/** The `data.x` names a template's fields use: the preview's sample data starts with them. */
function dataNames(template) {
  const names = new Set();
  const text = JSON.stringify(template);
  for (const m of text.matchAll(/\bdata\.([A-Za-z_][A-Za-z0-9_]*)/g)) names.add(m[1]);
  return [...names];
}

const SAMPLE_TEMPLATE = {
  description: "What this template is for",
  email: { subject: "Hello {{ entity.name }}", text: "{{ data.message }}" },
};

async function templatePage(main, me, key, params) {
  const path = `/v1/templates/${encodeURIComponent(key)}`;
  let template;
  try {
    template = await get(path);
  } catch (error) {
    if (error.status !== 404 || !me.can("admin") || !params.has("new")) throw error;
    template = null;
  }
  fill(
    main,
    h("h1", {}, "Template ", h("span", { class: "mono" }, key)),
    h("p", {}, h("a", { href: "#/templates" }, "← Templates")),
    params.has("saved") && template ? h("p", { class: "notice", role: "status" }, `Version ${params.get("saved")} recorded.`) : null,
    template === null
      ? [h("p", { class: "notice" }, "No version yet: write the first one below."), editorSection(key, path, SAMPLE_TEMPLATE)]
      : [
          summarySection(template),
          versionsSection(template),
          diffSection(key, path, template),
          previewSection(path, template),
          me.can("admin") ? editorSection(key, path, template.current.template) : h("p", { class: "muted" }, "Your key reads only: a new version needs an admin key."),
        ],
  );
}

function summarySection(t) {
  return h(
    "dl",
    { class: "kv" },
    h("dt", {}, "Description"),
    h("dd", {}, t.current.template.description ?? "—"),
    h("dt", {}, "Current version"),
    h("dd", {}, `${t.current.version}, recorded `, time(t.current.recordedAt), ` by ${t.current.recordedBy}`),
    h("dt", {}, "Locales"),
    h("dd", {}, Object.keys(t.current.template.locales ?? {}).join(", ") || "default content only"),
  );
}

function versionsSection(t) {
  return [
    h("h2", {}, `Versions (${t.versions.length})`),
    table(
      "Versions, newest first",
      ["Version", "Recorded", "By"],
      [...t.versions].reverse().map((v) => h("tr", {}, cell("Version", String(v.version)), cell("Recorded", time(v.recordedAt)), cell("By", v.recordedBy))),
    ),
  ];
}

/** Two versions, field by field: each changed field's lines, removed and added. */
function diffSection(key, path, t) {
  const numbers = t.versions.map((v) => v.version);
  const select = (id, label, selected) =>
    field(
      label,
      h(
        "select",
        { id, name: id },
        numbers.map((n) => h("option", { value: n, selected: n === selected }, `version ${n}`)),
      ),
    );
  const latest = numbers.at(-1);
  const fromField = select("diff-from", "From", numbers.length > 1 ? numbers.at(-2) : latest);
  const toField = select("diff-to", "To", latest);
  const from = fromField.querySelector("select");
  const to = toField.querySelector("select");
  const out = h("div", { id: "diff", "aria-live": "polite" });
  const cache = new Map();
  const version = async (n) => {
    if (!cache.has(n)) cache.set(n, get(`${path}/versions/${n}`));
    return cache.get(n);
  };
  let shown = 0;
  async function compare() {
    const ticket = ++shown;
    const a = Number(from.value);
    const b = Number(to.value);
    try {
      const [va, vb] = await Promise.all([version(a), version(b)]);
      if (ticket !== shown) return;
      const fields = diffFields(va.template, vb.template);
      const changed = fields.filter((f) => f.change !== "same");
      fill(
        out,
        h("p", { role: "status" }, a === b ? "The same version on both sides: nothing differs." : `${changed.length} field(s) differ between version ${a} and version ${b}.`),
        changed.map((f) =>
          h(
            "section",
            { class: "panel field-diff", "aria-label": `${f.path}: ${f.change}` },
            h("h3", {}, h("span", { class: "mono" }, f.path), " ", h("span", { class: `badge d-${f.change}` }, f.change)),
            h(
              "pre",
              { class: "diff" },
              f.lines.map((l) =>
                l.op === "same"
                  ? h("span", { class: "same" }, `  ${l.text}\n`)
                  : h(
                      l.op === "add" ? "ins" : "del",
                      {},
                      h("span", { class: "visually-hidden" }, l.op === "add" ? "added: " : "removed: "),
                      `${l.op === "add" ? "+" : "−"} ${l.text}\n`,
                    ),
              ),
            ),
          ),
        ),
        fields.some((f) => f.change === "same") && a !== b
          ? h(
              "p",
              { class: "muted" },
              "Unchanged: ",
              fields
                .filter((f) => f.change === "same")
                .map((f) => f.path)
                .join(", "),
            )
          : null,
      );
      announce(`Version ${a} against version ${b}: ${changed.length} field(s) differ`);
    } catch (error) {
      if (ticket === shown) fill(out, h("p", { class: "error", role: "alert" }, error.message));
    }
  }
  from.addEventListener("change", () => void compare());
  to.addEventListener("change", () => void compare());
  void compare();
  return [
    h("h2", { id: "diff-title" }, "Compare two versions"),
    h(
      "form",
      { class: "row", "aria-labelledby": "diff-title", onsubmit: (e) => (e.preventDefault(), void compare()) },
      fromField,
      toField,
      h("button", { type: "submit" }, "Compare"),
    ),
    out,
  ];
}

/** Render with sample data as the operator types (debounced); a 422 shows what is missing. */
function previewSection(path, t) {
  const sample = Object.fromEntries(dataNames(t.current.template).map((n) => [n, `sample ${n}`]));
  const data = h("textarea", { id: "preview-data", name: "data", rows: 6, class: "mono", spellcheck: "false" }, JSON.stringify(sample, null, 2));
  const entity = h("input", { id: "preview-entity", name: "entityId", placeholder: "e.g. ada", autocomplete: "off" });
  const locale = h("input", { id: "preview-locale", name: "locale", placeholder: "e.g. fr", autocomplete: "off" });
  const versionSelect = h(
    "select",
    { id: "preview-version", name: "version" },
    [...t.versions].reverse().map((v) => h("option", { value: v.version }, `version ${v.version}${v.version === t.current.version ? " (current)" : ""}`)),
  );
  const state = h("p", { class: "muted", role: "status", id: "preview-state" });
  const out = h("div", { id: "preview", "aria-live": "polite" });
  let timer = null;
  let ticket = 0;

  async function render() {
    clearTimeout(timer);
    const mine = ++ticket;
    let parsed;
    try {
      parsed = data.value.trim() ? JSON.parse(data.value) : {};
      if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) throw new Error('it must be a JSON object, e.g. {"report": "Q3"}');
    } catch (error) {
      state.textContent = "";
      fill(out, h("p", { class: "error", role: "alert" }, `The sample data is not usable: ${error.message}`));
      return;
    }
    const body = { data: parsed, version: Number(versionSelect.value) };
    if (entity.value.trim()) body.entityId = entity.value.trim();
    if (locale.value.trim()) body.locale = locale.value.trim();
    state.textContent = "Rendering…";
    try {
      const r = await api("POST", `${path}/preview`, body);
      if (mine !== ticket) return;
      state.textContent = `Version ${r.version}${r.locale ? `, locale ${r.locale}` : ", default content"}: what would be sent.`;
      fill(
        out,
        h(
          "article",
          { class: "panel", "aria-label": "Email preview" },
          h("dl", { class: "kv" }, h("dt", {}, "Subject"), h("dd", { id: "preview-subject" }, r.email.subject)),
          r.email.html
            ? // As on the story page: the HTML in a sandbox with no allow-* token, so nothing in it runs.
              h("iframe", { class: "email", sandbox: "", srcdoc: r.email.html, title: `HTML of the preview “${r.email.subject}”`, referrerpolicy: "no-referrer" })
            : null,
          h("details", { open: !r.email.html }, h("summary", {}, "Plain text"), h("pre", {}, r.email.text)),
        ),
        r.slack
          ? h("article", { class: "panel", "aria-label": "Slack preview" }, h("h3", {}, "Slack message"), h("pre", {}, r.slack.mrkdwn))
          : h("p", { class: "muted" }, "Slack: made from the email content."),
      );
    } catch (error) {
      if (mine !== ticket) return;
      state.textContent = "";
      const what = error.status === 422 ? "The template cannot be rendered with this data" : "The preview failed";
      fill(out, h("div", { class: "error", role: "alert", id: "preview-error" }, h("strong", {}, `${what}: `), error.message));
    }
  }
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(() => void render(), PREVIEW_DELAY_MS);
  };
  for (const control of [data, entity, locale]) control.addEventListener("input", later);
  versionSelect.addEventListener("change", () => void render());
  void render();
  return [
    h("h2", { id: "preview-title" }, "Preview"),
    h(
      "p",
      { class: "muted" },
      "Rendered as you type; nothing is sent or stored. ",
      h("code", {}, "data"),
      " is what a request's data would be; with an entity id, ",
      h("code", {}, "entity.name"),
      " and the entity's locale are used.",
    ),
    h(
      "form",
      { class: "preview-form", "aria-labelledby": "preview-title", onsubmit: (e) => (e.preventDefault(), void render()) },
      h("div", { class: "wide" }, field("Sample data (JSON object)", data)),
      field("Entity id (optional)", entity),
      field("Locale (optional)", locale),
      field("Version", versionSelect),
      h("div", { class: "row" }, h("button", { type: "submit" }, "Render")),
    ),
    state,
    out,
  ];
}

/** An admin writes the next version as JSON (the body of PUT /v1/templates/:key). */
function editorSection(key, path, current) {
  const editor = h("textarea", { id: "template-json", name: "template", rows: 14, class: "mono", spellcheck: "false" }, JSON.stringify(current, null, 2));
  const out = h("div", { "aria-live": "polite" });
  return [
    h("h2", { id: "edit-title" }, "Save a new version"),
    h(
      "form",
      {
        "aria-labelledby": "edit-title",
        onsubmit: async (e) => {
          e.preventDefault();
          let body;
          try {
            body = JSON.parse(editor.value);
          } catch (err) {
            fill(out, h("p", { class: "error", role: "alert" }, `Not JSON: ${err.message}`));
            return;
          }
          try {
            const r = await api("PUT", path, body);
            announce(`Template ${key}: ${r.result}, version ${r.version}`);
            if (r.result === "unchanged") {
              fill(out, h("p", { class: "notice", role: "status" }, `Unchanged: version ${r.version} already says this; nothing recorded.`));
              return;
            }
            // The page again, with the new version in its lists.
            location.hash = `#/templates/${encodeURIComponent(key)}?saved=${r.version}`;
          } catch (err) {
            fill(out, h("p", { class: "error", role: "alert" }, err.message), err.problem?.errors ? json(err.problem.errors) : null);
          }
        },
      },
      field("The template as JSON (email, slack, locales, description)", editor),
      h("button", { type: "submit" }, "Save as a new version"),
    ),
    out,
  ];
}
