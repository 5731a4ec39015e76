/* global document, window, location */
import { api, session, whenSignedOut } from "./api.js";
import { announce, field, fill, h } from "./dom.js";
import { activityPage } from "./activity.js";
import { storyPage } from "./story.js";
import { failuresPage } from "./failures.js";
import { entitiesPage } from "./entities.js";
import { healthPage } from "./health.js";
import { templatesPage } from "./templates.js";

// The console's shell: sign-in, navigation, and a router over the URL's hash
// (#/activity, #/notifications/<id>, #/failures, #/entities/<id>,
// #/templates/<key>, #/health),
// so every page has a link an operator can paste into a ticket.

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
const signOutButton = document.getElementById("sign-out");

/** The signed-in key: { name, scopes, can(scope) }. */
let me = null;
/** The page shown now may hold a live stream or a timer: stopped before the next one. */
let leave = null;

function can(scope) {
  return me !== null && (me.scopes.includes("admin") || me.scopes.includes(scope));
}

function showSignIn(message) {
  me = null;
  nav.hidden = true;
  signOutButton.hidden = true;
  who.textContent = "";
  const key = h("input", { type: "password", name: "apiKey", id: "api-key", autocomplete: "off", required: true, spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert" }, message ?? "");
  const form = h(
    "form",
    {
      onsubmit: async (e) => {
        e.preventDefault();
        session.set(key.value.trim());
        try {
          await start();
        } catch (err) {
          session.clear();
          error.textContent = err.message;
          key.focus();
        }
      },
    },
    field("API key (a reader key to look, an admin key to act as well)", key),
    h("button", { type: "submit" }, "Sign in"),
  );
  fill(
    main,
    h(
      "section",
      { class: "signin", "aria-labelledby": "signin-title" },
      h("h1", { id: "signin-title" }, "Sign in to the tidings console"),
      h("p", { class: "muted" }, "The key is kept in this browser tab only, and forgotten when the tab closes."),
      form,
      error,
    ),
  );
  key.focus();
}

async function start() {
  const answer = await api("GET", "/v1/me");
  me = { ...answer, can };
  nav.hidden = false;
  signOutButton.hidden = false;
  who.textContent = `${me.name} · ${me.scopes.join(", ")}${can("admin") ? "" : " (read only)"}`;
  if (!location.hash || location.hash === "#/" || location.hash === "#") location.hash = "#/activity";
  else route();
}

const routes = [
  [/^#\/activity(?:\?(.*))?$/, (m) => activityPage(main, me, new URLSearchParams(m[1] ?? ""))],
  [/^#\/notifications\/([^/?]+)$/, (m) => storyPage(main, me, decodeURIComponent(m[1]))],
  [/^#\/failures$/, () => failuresPage(main, me)],
  [/^#\/entities(?:\/([^/?]+))?$/, (m) => entitiesPage(main, me, m[1] ? decodeURIComponent(m[1]) : null)],
  [/^#\/templates(?:\/([^/?]+))?(?:\?(.*))?$/, (m) => templatesPage(main, me, m[1] ? decodeURIComponent(m[1]) : null, new URLSearchParams(m[2] ?? ""))],
  [/^#\/health$/, () => healthPage(main, me)],
];

async function route() {
  if (!me) return;
  leave?.();
  leave = null;
  const hash = location.hash || "#/activity";
  for (const a of nav.querySelectorAll("a")) {
    if (hash.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  const match = routes.map(([re, page]) => [hash.match(re), page]).find(([m]) => m);
  if (!match) {
    fill(main, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "#/activity" }, "Back to activity")));
    return;
  }
  try {
    leave = (await match[1](match[0])) ?? null;
  } catch (error) {
    fill(main, h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, error.message));
  }
  main.focus({ preventScroll: true });
  announce(document.querySelector("main h1")?.textContent ?? "");
}

window.addEventListener("hashchange", () => void route());
signOutButton.addEventListener("click", () => {
  leave?.();
  leave = null;
  session.clear();
  showSignIn("Signed out.");
});
whenSignedOut((message) => {
  leave?.();
  leave = null;
  showSignIn(message);
});

if (session.key()) start().catch((error) => showSignIn(error.message));
else showSignIn();
