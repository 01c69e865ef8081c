// The dashboard's entry point: signs in when the server asks for it, then shows the view the
// URL's fragment names (#/agents, #/agents/ID, …), replacing it when the fragment changes.
import { session, loadSession, post, ApiError } from "./api.js";
import { h } from "./dom.js";
import * as views from "./views.js";
import { agentView } from "./agent.js";

const main = document.getElementById("main");
const banner = document.getElementById("banner");
let cleanup = null;

export function showError(e) {
  const message = e instanceof ApiError ? `${e.message}${e.code && e.code !== "error" ? ` (${e.code})` : ""}` : String(e && e.message || e);
  banner.textContent = message;
  banner.className = "banner";
  banner.hidden = false;
  if (e instanceof ApiError && e.status === 401 && session.authRequired) start();
}

export function clearError() {
  banner.hidden = true;
  banner.textContent = "";
}

window.addEventListener("unhandledrejection", (ev) => showError(ev.reason));

function who() {
  const el = document.getElementById("who");
  el.replaceChildren();
  if (!session.authRequired) {
    el.append(h("span", {}, "No sign-in (loopback, no tokens)"));
    return;
  }
  if (!session.role) return;
  el.append(
    h("span", { id: "role" }, session.role === "read_only" ? "Read-only" : "Signed in"),
    h("button", { id: "sign-out", onclick: async () => {
      await post("/web/sign-out");
      session.role = null;
      session.csrf = null;
      start();
    } }, "Sign out"),
  );
}

function signIn() {
  const input = h("input", { id: "signin-token", type: "password", name: "token", autocomplete: "current-password", required: true });
  const message = h("p", { id: "signin-error", class: "muted", role: "status" });
  const form = h("form", { class: "panel signin", onsubmit: async (ev) => {
    ev.preventDefault();
    message.textContent = "";
    try {
      await post("/web/session", { token: input.value });
      input.value = "";
      await start();
    } catch (e) {
      message.textContent = e.message;
    }
  } },
  h("h1", {}, "Sign in"),
  h("label", {}, "API token", input),
  h("p", { class: "muted small" }, "A token from api.tokens (full access) or api.read_only_tokens. It is kept in an HttpOnly session cookie, never in the page."),
  h("button", { id: "signin-submit", class: "primary", type: "submit" }, "Sign in"),
  message);
  main.replaceChildren(form);
  input.focus();
}

const routes = [
  [/^\/?$/, views.overview],
  [/^\/agents$/, views.agents],
  [/^\/agents\/([^/]+)$/, agentView],
  [/^\/queue$/, views.queue],
  [/^\/workers$/, views.workers],
  [/^\/accounts$/, views.accounts],
  [/^\/projects$/, views.projects],
  [/^\/webhooks$/, views.webhooks],
];

function route() {
  if (cleanup) cleanup();
  cleanup = null;
  clearError();
  const path = decodeURIComponent(location.hash.replace(/^#/, "").split("?")[0]) || "/";
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href").slice(1);
    const current = target === "/" ? path === "/" : path === target || path.startsWith(target + "/");
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  for (const [re, view] of routes) {
    const m = re.exec(path);
    if (m) {
      main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
      const ctx = { main, showError, clearError, params: m.slice(1) };
      cleanup = view(ctx) || null;
      return;
    }
  }
  main.replaceChildren(h("h1", {}, "Not found"), h("p", {}, "No such view. ", h("a", { href: "#/" }, "Overview")));
}

async function start() {
  try {
    const s = await loadSession();
    who();
    if (!s.signed_in) {
      if (cleanup) cleanup();
      cleanup = null;
      signIn();
      return;
    }
    views.probeWebhooks();
    route();
  } catch (e) {
    showError(e);
  }
}

window.addEventListener("hashchange", () => {
  if (session.role) route();
});
start();
