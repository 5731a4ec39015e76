/* global location */
import { followEvents, get } from "./api.js";
import { announce, badge, cell, field, fill, h, isoToLocal, localToIso, time } from "./dom.js";
import { plainError, plainType } from "./plain.js";

// Activity: notifications newest first (GET /v1/notifications with its
// filters), kept current by the live event stream (GET /v1/events/stream).

const STATUSES = ["accepted", "requested", "sending", "sent", "partially_sent", "failed", "not_sent"];
const CHANNELS = ["email", "slack"];

function channelsCell(n) {
  if (!n.channels) return h("span", { class: "muted" }, "not prepared yet");
  const items = n.channels.map((c) =>
    h(
      "span",
      { class: "chan" },
      `${c.channel} `,
      badge(c.status),
      c.lastError ? h("span", { class: "error long" }, ` ${plainError(c.lastError) ? `${plainError(c.lastError)}: ` : ""}${c.lastError}`) : null,
    ),
  );
  for (const s of n.skipped ?? []) items.push(h("span", { class: "chan muted" }, `${s.channel} skipped: ${s.reason}`));
  return items;
}

/** The status in plain words ("failed: the address does not exist (550 5.1.1)"), then the outcome's internal name and its reason as stored. */
function outcomeCell(n) {
  if (!n.outcome) return badge(n.status);
  const error = n.failureReason ?? (n.channels ?? []).map((c) => c.lastError).find(Boolean);
  const why = n.status === "sent" ? null : plainError(error);
  const words = why ?? plainType(n.outcome.type);
  return [
    badge(n.status),
    words && words !== String(n.status).replace(/_/g, " ") ? h("span", { class: "plain" }, ` ${why ? `${String(n.status).replace(/_/g, " ")}: ${why}` : words}`) : null,
    h("div", { class: "muted long" }, n.outcome.type.replace(/Event$/, "")),
    n.failureReason ? h("div", { class: "error long" }, n.failureReason) : null,
  ];
}

function row(n, fresh) {
  return h(
    "tr",
    { class: fresh ? "fresh" : null, "data-id": n.id },
    cell("Tracking id", h("a", { href: `#/notifications/${n.id}`, class: "mono" }, n.id)),
    cell("Requested", time(n.requestedAt)),
    cell("Entity", n.entity?.name ? `${n.entity.name} (${n.entity.id})` : (n.entity?.id ?? "")),
    cell("Subject", n.subject ?? h("span", { class: "muted" }, "(accepted, not handled yet)")),
    cell("Channels", channelsCell(n)),
    cell("Outcome", outcomeCell(n)),
  );
}

export async function activityPage(main, _me, params) {
  const input = (name, attrs = {}) => h("input", { name, id: `f-${name}`, value: params.get(name) ?? "", ...attrs });
  const select = (name, options) =>
    h(
      "select",
      { name, id: `f-${name}` },
      h("option", { value: "" }, "any"),
      options.map((o) => h("option", { value: o, selected: params.get(name) === o }, o.replace(/_/g, " "))),
    );
  const q = input("q", { type: "search", placeholder: "tracking id, subject, address" });
  const status = select("status", STATUSES);
  const entity = input("entityId", { placeholder: "entity id" });
  const channel = select("channel", CHANNELS);
  const tag = input("tag", { placeholder: "category=billing" });
  const since = h("input", { type: "datetime-local", step: 1, name: "since", id: "f-since", value: isoToLocal(params.get("since")) });
  const until = h("input", { type: "datetime-local", step: 1, name: "until", id: "f-until", value: isoToLocal(params.get("until")) });
  const form = h(
    "form",
    {
      class: "filters",
      role: "search",
      "aria-label": "Filter notifications",
      onsubmit: (e) => {
        e.preventDefault();
        const next = new URLSearchParams();
        const values = {
          q: q.value.trim(),
          status: status.value,
          entityId: entity.value.trim(),
          channel: channel.value,
          since: localToIso(since.value),
          until: localToIso(until.value),
        };
        for (const [k, v] of Object.entries(values)) if (v) next.set(k, v);
        const hash = `#/activity${next.toString() ? `?${next}` : ""}`;
        if (location.hash === hash) void load();
        else location.hash = hash;
      },
    },
    h("div", { class: "wide" }, field("Search (tracking id, subject, recipient address, the entity's email or Slack)", q)),
    field("Status", status),
    field("Entity", entity),
    field("Channel", channel),
    field("Tag (key=value)", tag),
    field("Requested from", since),
    field("Requested before", until),
    h("div", { class: "row" }, h("button", { type: "submit" }, "Filter"), h("a", { href: "#/activity" }, "Clear")),
  );
  const live = h("p", { class: "muted", id: "live-state", "aria-live": "polite" }, "Connecting to live updates…");
  const tbody = h("tbody");
  const list = h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: "responsive", id: "activity" },
      h("caption", { class: "visually-hidden" }, "Notifications, newest first"),
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Tracking id", "Requested", "Entity", "Subject", "Channels", "Outcome"].map((t) => h("th", { scope: "col" }, t)),
        ),
      ),
      tbody,
    ),
  );
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load more");
  const error = h("p", { class: "error", role: "alert" });
  fill(main, h("h1", {}, "Activity"), form, live, error, list, more);

  const filter = Object.fromEntries([...params.entries()].filter(([k]) => ["q", "status", "entityId", "channel", "tag", "since", "until"].includes(k)));
  let next = null;
  /** Pages of 50 on the page now: a reload reads as many, so "Load more" is not undone by the next live update. */
  let pages = 1;
  /** The next load only adds the pages asked for: what it adds is not new. */
  let extending = false;
  let shown = new Set();
  /** The views on the page now, by tracking id (a notification not projected yet has no `version`). */
  let views = new Map();

  async function load() {
    try {
      const items = [];
      const behind = [];
      let after = null;
      for (let i = 0; i < pages; i++) {
        const page = await get("/v1/notifications", { ...filter, limit: 50, ...(after ? { after } : {}) });
        items.push(...page.items);
        behind.push(...(page.viewsBehind ?? []));
        after = page.next;
        if (!after) break;
      }
      const before = shown;
      const isNew = (id) => !extending && before.size > 0 && !before.has(id);
      shown = new Set(items.map((n) => n.id));
      views = new Map(items.map((n) => [n.id, n]));
      awaitBehind(behind);
      fill(tbody, items.length ? items.map((n) => row(n, isNew(n.id))) : h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No notification matches.")));
      next = after;
      more.hidden = !next;
      error.textContent = "";
      extending = false;
      const added = [...shown].filter(isNew).length;
      if (added > 0) announce(`${added} new notification${added > 1 ? "s" : ""}`);
    } catch (e) {
      error.textContent = e.message;
    }
  }
  more.addEventListener("click", () => {
    pages += 1;
    extending = true;
    void refresh();
  });

  // Live: each event of the feed names a notification and its position in notification.events;
  // the page reloads, and the event counts as shown once the row's view has folded it in
  // (view.version >= position). The projection writes views a moment after the events, so
  // while an event is not shown yet the page looks again, sooner first, then less often, for
  // at most WAIT_MS. A row no longer on the page (the filters leave it out now, or it moved
  // past the pages shown) is not waited for.
  const WAIT_MS = 30_000;
  const MIN_GAP_MS = 300;
  const waiting = new Map(); // tracking id -> { position, since }
  const gaveUp = new Map(); // tracking id -> the position waited for in vain

  // Rows whose view the list says lags their latest event (written before the
  // page opened, or while it loaded, so no live event names it): waited for
  // like an event, once per position.
  function awaitBehind(behind) {
    for (const { id, position } of behind ?? []) {
      if ((waiting.get(id)?.position ?? -1) >= position || (gaveUp.get(id) ?? -1) >= position) continue;
      waiting.set(id, { position, since: Date.now() });
    }
  }
  let loading = false;
  let dirty = false;
  let retry = null;
  let retryMs = 0;
  let stopped = false;

  function settle() {
    const now = Date.now();
    for (const [id, w] of waiting) {
      if (!shown.has(id) || (views.get(id)?.version ?? -1) >= w.position) waiting.delete(id);
      else if (now - w.since > WAIT_MS) {
        gaveUp.set(id, w.position);
        waiting.delete(id);
      }
    }
    clearTimeout(retry);
    if (waiting.size === 0 || stopped) {
      retryMs = 0;
      live.dataset.pending = "0";
      return;
    }
    live.dataset.pending = String(waiting.size);
    retryMs = Math.min(retryMs ? retryMs * 2 : 200, 3000);
    retry = setTimeout(() => void refresh(), retryMs);
  }

  async function refresh() {
    // One load at a time; events that arrive meanwhile cost one more load after it.
    if (loading) {
      dirty = true;
      return;
    }
    loading = true;
    do {
      dirty = false;
      const started = Date.now();
      await load();
      // A busy feed would otherwise reload back to back: at most one list read per MIN_GAP_MS.
      if (dirty && !stopped) await new Promise((resolve) => setTimeout(resolve, Math.max(0, MIN_GAP_MS - (Date.now() - started))));
    } while (dirty && !stopped);
    loading = false;
    settle();
  }

  const stop = followEvents(
    (event) => {
      const w = waiting.get(event.id);
      waiting.set(event.id, { position: Math.max(w?.position ?? 0, event.position), since: Date.now() });
      retryMs = 0;
      void refresh();
    },
    (state) => {
      live.textContent = state === "live" ? "Live: new and changed notifications appear here." : "Live updates interrupted; reconnecting…";
    },
  );
  // The stream opens before the first load, so nothing written in between goes unseen.
  await stop.ready;
  await load();
  settle();
  return () => {
    stopped = true;
    stop();
    clearTimeout(retry);
  };
}
