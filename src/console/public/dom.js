/* global document */
// Small DOM helpers. Text always goes in as text nodes (never innerHTML): every
// string the console shows comes from stored records, some typed by clients.

/** h("a", { href: "#/x", class: "y" }, "text", child): an element with attributes and children. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/* global Node */

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A time as the operator reads it: local date and time to the second, with the ISO text as a tooltip. */
export function time(iso) {
  if (!iso) return h("span", { class: "muted" }, "—");
  const d = new Date(iso);
  return h(
    "time",
    { datetime: iso, title: iso },
    d.toLocaleString(undefined, { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }),
  );
}

/** A status as a coloured badge (the colour is a hint only: the word is always there). */
export function badge(status) {
  return h("span", { class: `badge s-${status}` }, String(status).replace(/_/g, " "));
}

/** A labelled form field: <label>Text <input ...></label>. */
export function field(labelText, control) {
  return h("label", {}, labelText, control);
}

/** Tell screen readers (and tests) what just happened. */
export function announce(text) {
  const el = document.getElementById("announce");
  if (el) el.textContent = text;
}

/** A table that turns into labelled rows on a phone (data-label on each cell). */
export function table(caption, headers, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "responsive" },
      caption ? h("caption", { class: "visually-hidden" }, caption) : null,
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          headers.map((t) => h("th", { scope: "col" }, t)),
        ),
      ),
      h("tbody", {}, rows),
    ),
  );
}

/** A cell with its column's name for the phone layout. */
export function cell(label, ...content) {
  // One wrapper, so that on a phone the label and the content are the two columns of the cell's grid.
  return h("td", { "data-label": label }, h("div", {}, ...content));
}

export function json(value) {
  return h("pre", { class: "mono" }, JSON.stringify(value, null, 2));
}

/** A <datetime-local> value (local time) as ISO 8601 with its offset, or undefined. */
export function localToIso(value) {
  if (!value) return undefined;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? undefined : d.toISOString();
}

/** An ISO time as a <datetime-local> value, in local time. */
export function isoToLocal(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}
