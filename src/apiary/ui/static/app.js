// The console's shell: sign-in, the hash router, and who the token is (whoami), which decides
// only which buttons are shown — the API decides what is allowed.
import { auth, get, whenUnauthorized } from "./api.js";
import { h } from "./dom.js";
import { overview } from "./overview.js";
import { hivePage } from "./hive.js";
import { sessionPage } from "./session.js";
import { dlqPage } from "./dlq.js";
import { logsPage } from "./logs.js";
import { sessionsPage } from "./sessions.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const whoEl = document.getElementById("who");
const sessionsLink = document.getElementById("sessions-link");
let who = null;
let current = null;

const routes = [
  [/^#\/overview(?:\/(\d+))?$/, overview],
  [/^#\/hive\/([^/]+)\/([^/]+)$/, hivePage],
  [/^#\/session\/([^/]+)\/([^/]+)$/, sessionPage],
  [/^#\/sessions\/([^/]+)(?:\/(\d+))?$/, sessionsPage],
  [/^#\/dlq\/([^/]+)\/([^/]+)$/, dlqPage],
  [/^#\/logs\/([^/]+)\/(drone|hive)\/([^/]+)$/, logsPage],
];

/** May this token change things in `cell`? Only to hide buttons; the API checks again. */
function canWrite(cell) {
  if (!who) return false;
  if (who.role === "cluster-admin") return true;
  return (who.role === "admin" || who.role === "developer") && who.cell === cell;
}

function signIn(message) {
  nav.hidden = true;
  who = null;
  const token = h("input", { id: "token", type: "password", autocomplete: "off", required: true, spellcheck: "false" });
  const trace = h("input", { id: "trace", type: "url", placeholder: "http://jaeger:16686/trace/{traceId}" });
  const error = h("p", { id: "signin-error", class: "error", role: "alert" }, message || "");
  const form = h(
    "form",
    { class: "signin", "aria-labelledby": "signin-title" },
    h("h1", { id: "signin-title" }, "Sign in to Apiary"),
    h("p", {}, "Paste a bearer token (apiaryctl config view, or <data-dir>/admin.token). It is kept in this browser tab only."),
    h("label", { for: "token" }, "Bearer token"),
    token,
    h("label", { for: "trace" }, "Trace link template (optional)"),
    trace,
    error,
    h("button", { type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    auth.set(token.value.trim(), trace.value.trim());
    try {
      who = await get("/api/v1/whoami");
    } catch (err) {
      auth.clear();
      error.textContent = `Sign-in failed: ${err.message}`;
      token.focus();
      return;
    }
    if (location.hash.startsWith("#/") && location.hash !== "#/signin") render();
    else location.hash = "#/overview";
  });
  main.replaceChildren(form);
  token.focus();
}

async function render() {
  if (current) current.abort();
  current = new AbortController();
  if (!auth.token()) return signIn();
  if (!who) {
    try {
      who = await get("/api/v1/whoami");
    } catch (err) {
      auth.clear();
      return signIn(`Sign-in failed: ${err.message}`);
    }
  }
  nav.hidden = false;
  whoEl.textContent = `${who.user} · ${who.role}${who.cell ? ` in ${who.cell}` : ""}`;
  sessionsLink.href = `#/sessions/${encodeURIComponent(who.cell || "default")}`;
  const route = routes.find(([re]) => re.test(location.hash));
  if (!route) {
    location.hash = "#/overview";
    return;
  }
  const params = location.hash.match(route[0]).slice(1).map((p) => (p === undefined ? p : decodeURIComponent(p)));
  main.replaceChildren();
  main.removeAttribute("data-ready");
  const ctx = { main, who, signal: current.signal, canWrite };
  try {
    await route[1](ctx, ...params);
  } catch (err) {
    if (ctx.signal.aborted) return;
    main.append(h("p", { class: "error", role: "alert" }, err.message));
  }
  const heading = main.querySelector("h1");
  if (heading) {
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
}

whenUnauthorized((body) => {
  if (!who) return; // signing in: the form says why
  auth.clear();
  if (current) current.abort();
  signIn(`Signed out: ${body.message || "the token is no longer valid"}`);
});

document.getElementById("signout").addEventListener("click", () => {
  auth.clear();
  if (current) current.abort();
  signIn("Signed out.");
});
window.addEventListener("hashchange", render);
render();
