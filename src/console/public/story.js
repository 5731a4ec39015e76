import { followEvents, get } from "./api.js";
import { openAction } from "./actions.js";
import { badge, cell, field, fill, h, isoToLocal, json, localToIso, table, time } from "./dom.js";
import { plainError, plainStatus, plainType } from "./plain.js";

// A notification's story: its view, the email and Slack message as they were
// sent, the notification as of any moment, and every record of every stream
// with that tracking id (GET /v1/notifications/:id/events, the engine's
// readTrail) with each one's handling history.

const MACHINERY = /(_bot|runner|projection|catch_up|sweep)$/;

function historyTable(handling) {
  return table(
    `Handling by ${handling.concern}`,
    ["When", "Change", "Action", "Who", "Reason / error", "Attempt"],
    handling.history.map((e) =>
      h(
        "tr",
        {},
        cell("When", time(e.recordedAt)),
        cell("Change", badge(e.from), " → ", badge(e.to)),
        cell("Action", e.action),
        cell("Who", e.actor, h("div", { class: "muted" }, e.recordedBy)),
        cell(
          "Reason",
          e.reason ?? "",
          e.details?.error ? h("div", { class: "error" }, String(e.details.error)) : null,
          e.details?.redriveOf ? h("div", { class: "muted" }, `re-drive of attempt ${e.details.redriveOf.attempt}`) : null,
        ),
        cell("Attempt", String(e.attempt)),
      ),
    ),
  );
}

function trailItem(r) {
  const byOperator =
    r.handling.some((hd) => hd.history.some((e) => !MACHINERY.test(e.actor) && e.action !== "claim" && e.actor.startsWith("api-key:"))) || r.tags?.requested_by !== undefined;
  return h(
    "li",
    { class: byOperator ? "operator" : null },
    h(
      "div",
      {},
      time(r.recordedAt),
      " ",
      plainType(r.type) ? [h("span", { class: "plain" }, plainType(r.type)), " · "] : null,
      h("strong", {}, r.type),
      " ",
      h("span", { class: "mono muted" }, `${r.stream} #${r.position}`),
    ),
    h("div", { class: "muted" }, `written by ${r.recordedBy}`, r.causedBy ? ` · caused by ${r.causedBy.stream} #${r.causedBy.position}` : ""),
    r.handling.map((hd) =>
      h(
        "div",
        {},
        `${hd.concern}: `,
        badge(hd.status),
        ` · ${hd.attempts} attempt(s)`,
        hd.lastError ? h("span", { class: "error" }, ` · ${plainError(hd.lastError) ? `${plainError(hd.lastError)}: ` : ""}${hd.lastError}`) : null,
      ),
    ),
    h(
      "details",
      {},
      h("summary", {}, "Payload and handling history"),
      json(r.payload),
      r.handling.filter((hd) => hd.history.length > 0).map((hd) => [h("h4", {}, `Handling by ${hd.concern}`), historyTable(hd)]),
    ),
  );
}

/** The email as it was sent: the operation (what was sent) and the event that says how it went. `purpose`: the notification's own, or alerts about it. */
function emailSection(records, purpose, title) {
  const ops = records.filter((r) => r.stream === "email.operations" && r.payload?.purpose === purpose);
  if (ops.length === 0) return null;
  return [
    h("h2", {}, title),
    ops.map((op) => {
      const p = op.payload;
      const outcome = records.filter((r) => r.stream === "email.events" && r.payload?.operationId === p.operationId).at(-1);
      return h(
        "article",
        { class: "panel", "aria-label": `Email ${p.operationId}` },
        h(
          "dl",
          { class: "kv" },
          h("dt", {}, "Purpose"),
          h("dd", {}, p.purpose === "internal_alert" ? "alert to the internal team" : "notification"),
          h("dt", {}, "To"),
          h("dd", {}, p.to.join(", ")),
          h("dt", {}, "Subject"),
          h("dd", {}, p.subject),
          h("dt", {}, "Message-ID"),
          h("dd", { class: "mono" }, p.messageId),
          h("dt", {}, "Outcome"),
          h(
            "dd",
            {},
            outcome
              ? [
                  plainType(outcome.type) ? [h("span", { class: "plain" }, plainType(outcome.type)), " · "] : null,
                  outcome.type,
                  " · ",
                  time(outcome.recordedAt),
                  outcome.payload.response ? h("div", { class: "mono" }, outcome.payload.response) : null,
                  outcome.payload.error ? h("div", { class: "error" }, outcome.payload.error) : null,
                ]
              : "not sent yet",
          ),
        ),
        p.html
          ? // No allow-* token in sandbox: the email's HTML cannot run scripts, submit forms or reach this page.
            h("iframe", { class: "email", sandbox: "", srcdoc: p.html, title: `HTML of the email “${p.subject}”`, referrerpolicy: "no-referrer" })
          : null,
        h("details", { open: !p.html }, h("summary", {}, "Plain text"), h("pre", {}, p.text)),
      );
    }),
  ];
}

function slackSection(records, purpose, title) {
  const ops = records.filter((r) => r.stream === "slack.operations" && r.payload?.purpose === purpose);
  if (ops.length === 0) return null;
  return [
    h("h2", {}, title),
    ops.map((op) => {
      const p = op.payload;
      const outcome = records.filter((r) => r.stream === "slack.events" && r.payload?.operationId === p.operationId).at(-1);
      return h(
        "article",
        { class: "panel", "aria-label": `Slack message ${p.operationId}` },
        h(
          "dl",
          { class: "kv" },
          h("dt", {}, "Purpose"),
          h("dd", {}, p.purpose === "internal_alert" ? "alert to the internal team" : "notification"),
          h("dt", {}, "Channel"),
          h("dd", { class: "mono" }, p.channel),
          h("dt", {}, "Outcome"),
          h(
            "dd",
            {},
            outcome
              ? [
                  plainType(outcome.type) ? [h("span", { class: "plain" }, plainType(outcome.type)), " · "] : null,
                  outcome.type,
                  " · ",
                  time(outcome.recordedAt),
                  outcome.payload.ts ? ` · ts ${outcome.payload.ts}` : "",
                  outcome.payload.error ? h("div", { class: "error" }, outcome.payload.error) : null,
                ]
              : "not posted yet",
          ),
        ),
        p.subject ? h("p", {}, h("strong", {}, p.subject)) : null,
        h("pre", {}, p.mrkdwn ?? p.text),
      );
    }),
  ];
}

function channelsTable(view) {
  if (!view.channels) return h("p", { class: "muted" }, "Accepted; not prepared on any channel yet.");
  return table(
    "Channels",
    ["Channel", "Destination", "State", "Attempts", "Last error", "Sent"],
    view.channels.map((c) =>
      h(
        "tr",
        {},
        cell("Channel", c.channel),
        cell("Destination", h("span", { class: "mono" }, c.destination)),
        cell("State", badge(c.status), c.nextAttemptAt ? h("div", { class: "muted" }, "next attempt ", time(c.nextAttemptAt)) : null),
        cell("Attempts", String(c.attempts)),
        cell("Last error", c.lastError ? h("span", { class: "error" }, plainError(c.lastError) ? `${plainError(c.lastError)}: ` : "", c.lastError) : ""),
        cell("Sent", time(c.sentAt)),
      ),
    ),
  );
}

function asOfSection(id) {
  // "Now" to the second, rounded up: rounded down, it fell before what was
  // written earlier in this same second (a notification just requested "had
  // no events yet").
  const now = new Date(Math.ceil(Date.now() / 1000) * 1000);
  const at = h("input", { type: "datetime-local", step: 1, id: "as-of", name: "asOf", required: true, value: isoToLocal(now.toISOString()) });
  const out = h("div", { "aria-live": "polite" });
  const form = h(
    "form",
    {
      class: "row",
      onsubmit: async (e) => {
        e.preventDefault();
        try {
          const answer = await get(`/v1/notifications/${id}`, { asOf: localToIso(at.value) });
          const a = answer.aggregate;
          fill(
            out,
            h(
              "p",
              {},
              "As of ",
              time(answer.asOf),
              ": ",
              badge(a.status),
              ` · ${answer.fromSnapshot === null ? "folded from the first event" : `snapshot at event #${answer.fromSnapshot}`} + ${answer.eventsApplied} later event(s)`,
            ),
            a.channels.length
              ? h(
                  "ul",
                  {},
                  a.channels.map((c) => h("li", {}, `${c.channel} to ${c.destination}: `, badge(c.outcome), c.error ? ` ${c.error}` : "")),
                )
              : null,
            h("details", {}, h("summary", {}, "The aggregate"), json(a)),
          );
        } catch (err) {
          fill(out, h("p", { class: "error", role: "alert" }, err.message));
        }
      },
    },
    field("The notification as of", at),
    h("button", { type: "submit" }, "Show"),
  );
  return [h("h2", {}, "As of a moment"), form, out];
}

/** The notification's status in plain words: "failed: the address does not exist (550 5.1.1)", "sent", "scheduled for later". */
function statusWords(view) {
  if (view.status === "sent" || !view.outcome) return view.outcome ? (plainType(view.outcome.type) ?? plainStatus(view.status)) : plainStatus(view.status);
  const error = view.failureReason ?? (view.channels ?? []).map((c) => c.lastError).find(Boolean);
  return plainError(error) ? plainStatus(view.status, error) : (plainType(view.outcome.type) ?? plainStatus(view.status));
}

function repairSection(me, id, view, reload) {
  if (!me.can("admin")) return h("p", { class: "muted" }, "Your key reads only: repairs need an admin key.");
  const host = h("div");
  const failed = (view.channels ?? []).some((c) => c.status === "failed");
  const resendLabel = failed ? "Resend to current details…" : undefined;
  const button = (label, title, request) =>
    h(
      "button",
      {
        type: "button",
        class: "secondary",
        onclick: () => openAction(host, { title, request, onDone: reload, resendLabel, redriveLabel: "Re-drive failed records…", entity: view.entity }),
      },
      label,
    );
  return [
    h("h2", {}, "Repair"),
    h(
      "div",
      { class: "row" },
      button("Re-drive failed records…", "Re-drive this notification's failed records", ["POST", "/v1/admin/actions/redrive-failed", { notification: id }]),
      failed ? button(resendLabel, "Resend the failed channels to the entity's current details", ["POST", "/v1/admin/resend", { notification: id }]) : null,
      button("Archive failures…", "Archive this notification's failures", ["POST", "/v1/admin/actions/archive-failed", { notification: id }]),
      button("Cancel stuck records…", "Cancel this notification's records stuck running", ["POST", "/v1/admin/actions/cancel-running", { notification: id, requeue: true }]),
    ),
    host,
  ];
}

export async function storyPage(main, me, id) {
  const body = h("div");
  fill(main, h("h1", {}, "Notification ", h("span", { class: "mono" }, id)), h("p", {}, h("a", { href: "#/activity" }, "← Activity")), body);
  const summary = h("div", { id: "summary" });
  const story = h("div", { id: "story" });
  const fixed = h("div");

  async function load(first) {
    const [view, trail] = await Promise.all([get(`/v1/notifications/${id}`), get(`/v1/notifications/${id}/events`)]);
    fill(
      summary,
      h(
        "dl",
        { class: "kv" },
        h("dt", {}, "Status"),
        h(
          "dd",
          { id: "status" },
          badge(view.status),
          // Plain words when they say more than the badge.
          statusWords(view) !== plainStatus(view.status) ? [" ", h("span", { class: "plain" }, statusWords(view))] : null,
          view.outcome ? h("span", { class: "muted" }, ` · ${view.outcome.type}`) : "",
          view.failureReason ? h("div", { class: "error" }, view.failureReason) : null,
        ),
        h("dt", {}, "Subject"),
        h("dd", {}, view.subject ?? ""),
        h("dt", {}, "Entity"),
        h("dd", {}, h("a", { href: `#/entities/${encodeURIComponent(view.entity.id)}` }, view.entity.name ? `${view.entity.name} (${view.entity.id})` : view.entity.id)),
        h("dt", {}, "Requested"),
        h("dd", {}, time(view.requestedAt)),
        view.resends?.length
          ? [
              h("dt", {}, "Resends"),
              h(
                "dd",
                {},
                view.resends.map((r) => h("div", {}, time(r.at), ` by ${r.requestedBy}: ${r.reason}`)),
              ),
            ]
          : null,
      ),
      h("h2", {}, "Channels"),
      channelsTable(view),
    );
    if (first)
      fill(
        fixed,
        repairSection(me, id, view, () => load(false)),
        asOfSection(id),
      );
    fill(
      story,
      // The notification's own messages first; the alerts its failure set off after them.
      emailSection(trail.records, "notification", "Email as sent"),
      slackSection(trail.records, "notification", "Slack message as posted"),
      emailSection(trail.records, "internal_alert", "Alert email to the internal team"),
      slackSection(trail.records, "internal_alert", "Alert on Slack to the internal team"),
      h("h2", {}, `Every record (${trail.records.length}), in order`),
      h("ol", { class: "trail" }, trail.records.map(trailItem)),
    );
    followUp(view, trail.records);
  }

  // Live events say when the notification changes, but work under way (a re-drive's new attempt) and
  // the view (written by the projection a moment after the events) may still be moving: look again
  // while the trail says so, for at most two minutes after the last change seen.
  let lastChange = Date.now();
  let lastSeen = "";
  let followTimer = null;
  function followUp(view, records) {
    const seen = `${records.length}:${view.version ?? 0}`;
    if (seen !== lastSeen) lastChange = Date.now();
    lastSeen = seen;
    const events = records.filter((r) => r.stream === "notification.events");
    const viewBehind = view.version !== undefined && events.some((e) => e.position > view.version);
    const working = records.some((r) => r.handling.some((hd) => hd.status === "Running" || hd.status.startsWith("AvailableAfter")));
    clearTimeout(followTimer);
    if ((viewBehind || working || view.status === "accepted") && Date.now() - lastChange < 120_000) {
      followTimer = setTimeout(() => void load(false).catch(() => {}), viewBehind ? 500 : 2000);
    }
  }

  // This notification's events reload the page, one load at a time (events arriving meanwhile
  // cost one more); followUp looks again while the view has not caught up with the events.
  // The stream opens before the first load, so nothing written in between goes unseen.
  let loading = false;
  let dirty = false;
  async function reload() {
    if (loading) {
      dirty = true;
      return;
    }
    loading = true;
    try {
      do {
        dirty = false;
        await load(false).catch(() => {});
      } while (dirty);
    } finally {
      loading = false;
    }
  }
  const stop = followEvents((event) => {
    if (event.id === id) void reload();
  });
  await stop.ready;
  try {
    await load(true);
  } catch (error) {
    stop();
    throw error;
  }
  fill(body, summary, fixed, story);
  return () => {
    stop();
    clearTimeout(followTimer);
  };
}
