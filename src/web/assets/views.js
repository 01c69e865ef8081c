// The fleet-wide views. They read the API and refresh every few seconds (lists do not have a
// fleet-wide event stream yet); an agent's own page follows its event stream live.
import { get, getAll, post, del, listAgents, canAct, ApiError } from "./api.js";
import { h, badge, ago, duration, span, time, table, stat, STATUS_LABEL } from "./dom.js";

const REFRESH_MS = 3000;

// Runs `load` now and every REFRESH_MS until the view is left; errors go to the banner.
function every(ctx, load) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    try {
      await load();
      ctx.clearError();
    } catch (e) {
      ctx.showError(e);
    }
    if (!stopped) timer = setTimeout(tick, REFRESH_MS);
  };
  tick();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function perMinute(times) {
  const now = Date.now();
  const bins = new Array(60).fill(0);
  for (const t of times) {
    const age = (now - new Date(t).getTime()) / 60000;
    if (age >= 0 && age < 60) bins[59 - Math.floor(age)] += 1;
  }
  return bins;
}

function bars(label, bins, id) {
  const max = Math.max(1, ...bins);
  const total = bins.reduce((a, b) => a + b, 0);
  return h("div", { class: "stat", id },
    h("span", { class: "n" }, String(total)),
    h("span", { class: "l" }, `${label}, last hour (per minute; peak ${max})`),
    h("div", { class: "bars", "aria-hidden": "true" }, bins.map((n) => h("span", { style: null, "data-n": n, title: String(n) }))));
}

function quantile(values, q) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

export function overview(ctx) {
  const body = h("div", {});
  ctx.main.replaceChildren(h("h1", {}, "Overview"), body);
  return every(ctx, async () => {
    const [queue, list, workers] = await Promise.all([
      get("/v1/queue"), listAgents({ limit: 1000 }), getAll("/v1/workers"),
    ]);
    const agents = list.items;
    const by = queue.agents_by_status || {};
    const hourAgo = Date.now() - 3600e3;
    const recent = (t) => t && new Date(t).getTime() >= hourAgo;
    const failedHour = agents.filter((a) => (a.status === "failed" || a.status === "crashed") && recent(a.finished_at)).length;
    const latencies = agents.filter((a) => a.started_at && recent(a.created_at))
      .map((a) => (new Date(a.started_at) - new Date(a.created_at)) / 1000);
    const live = workers.filter((w) => w.status !== "dead" && w.status !== "stopped");
    const p50 = quantile(latencies, 0.5);
    const p95 = quantile(latencies, 0.95);
    const fmt = (s) => (s === null ? "–" : s < 10 ? `${s.toFixed(2)} s` : duration(s));
    const grid = h("div", { class: "grid", id: "overview-stats" },
      stat("Running", String((by.running || 0) + (by.starting || 0)), "ov-running"),
      stat("Waiting for input", String(by.waiting_for_input || 0), "ov-waiting"),
      stat("Pending", String(by.pending || 0), "ov-pending"),
      stat("Failed or crashed, last hour", String(failedHour), "ov-failed"),
      stat("Queue depth", String(queue.depth), "ov-depth"),
      stat("Oldest pending", queue.oldest_pending_age_seconds == null ? "–" : duration(queue.oldest_pending_age_seconds), "ov-oldest"),
      stat("Workers live", String(live.length), "ov-workers"),
      stat("Dispatch latency p50 / p95", `${fmt(p50)} / ${fmt(p95)}`, "ov-latency"),
    );
    const series = h("div", { class: "grid" },
      bars("Spawns", perMinute(agents.map((a) => a.created_at)), "ov-spawns"),
      bars("Completions", perMinute(agents.filter((a) => a.status === "completed").map((a) => a.finished_at)), "ov-completions"),
      bars("Failures", perMinute(agents.filter((a) => a.status === "failed" || a.status === "crashed").map((a) => a.finished_at)), "ov-failures"),
    );
    let usage = h("p", { class: "muted" }, "No token or cost usage recorded for today.");
    try {
      const u = await get("/v1/usage?period=today");
      if (u && (u.input_tokens !== undefined || u.cost_usd !== undefined)) {
        usage = h("div", { class: "grid" },
          stat("Tokens in today", String(u.input_tokens ?? "–")),
          stat("Tokens out today", String(u.output_tokens ?? "–")),
          stat("Cost today", u.cost_usd == null ? "–" : `$${Number(u.cost_usd).toFixed(2)}`));
      }
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 404) throw e;
    }
    const waiting = agents.filter((a) => a.status === "waiting_for_input");
    body.replaceChildren(grid,
      h("h2", {}, "Activity"), series,
      h("h2", {}, "Usage"), usage,
      h("h2", {}, "Waiting for input"),
      waiting.length === 0 ? h("p", { class: "muted" }, "No agent is waiting for an answer.")
        : h("ul", {}, waiting.map((a) => h("li", {}, h("a", { href: `#/agents/${a.id}` }, a.name), " — ", a.pending_questions.map((q) => q.question).join(" / ")))));
  });
}

const PAGE = 50;

export function agents(ctx) {
  const state = { status: "", project: "", provider: "", text: "", page: 0, cursors: [null], selected: new Set() };
  const statusSel = h("select", { id: "f-status" }, h("option", { value: "" }, "Any status"),
    Object.entries(STATUS_LABEL).map(([v, l]) => h("option", { value: v }, l)));
  const projectSel = h("select", { id: "f-project" }, h("option", { value: "" }, "Any project"));
  const providerSel = h("select", { id: "f-provider" }, h("option", { value: "" }, "Any provider"));
  const text = h("input", { id: "f-text", type: "search", placeholder: "name or task id" });
  const info = h("span", { id: "page-info", class: "muted small", role: "status" });
  const prev = h("button", { id: "prev-page", onclick: () => { state.page--; refresh(); } }, "← Newer");
  const next = h("button", { id: "next-page", onclick: () => { state.page++; refresh(); } }, "Older →");
  const stopSel = h("button", { id: "bulk-stop", class: "danger", onclick: () => bulk("stop") }, "Stop selected");
  const dismissSel = h("button", { id: "bulk-dismiss", onclick: () => bulk("dismiss") }, "Dismiss selected");
  const tableBox = h("div", { id: "agents-table" });
  const changed = () => { state.page = 0; state.cursors = [null]; refresh(); };
  for (const el of [statusSel, projectSel, providerSel]) el.addEventListener("change", () => { state[el.id.slice(2)] = el.value; changed(); });
  let typing = null;
  text.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { state.text = text.value.trim(); changed(); }, 250); });
  ctx.main.replaceChildren(h("h1", {}, "Agents"),
    h("div", { class: "filters", role: "search" },
      h("label", {}, "Status", statusSel), h("label", {}, "Project", projectSel),
      h("label", {}, "Provider", providerSel), h("label", {}, "Search", text),
      canAct() ? h("div", { class: "actions" }, stopSel, dismissSel) : null),
    tableBox, h("div", { class: "pager" }, prev, next, info));

  async function bulk(action) {
    const ids = [...state.selected];
    if (ids.length === 0) return;
    const failures = [];
    await Promise.all(ids.map((id) => post(`/v1/agents/${id}/${action}`).catch((e) => failures.push(e.message))));
    state.selected.clear();
    if (failures.length) ctx.showError(new Error(`${failures.length} of ${ids.length} failed: ${failures[0]}`));
    refresh();
  }

  function fillOptions(sel, values) {
    const have = new Set([...sel.options].map((o) => o.value));
    for (const v of [...values].sort()) if (!have.has(v)) sel.append(h("option", { value: v }, v));
  }

  async function load() {
    const params = { limit: PAGE, cursor: state.cursors[state.page] };
    if (state.status) params.status = [state.status];
    if (state.project) params.project = state.project;
    if (state.provider) params.provider = state.provider;
    // The text is a name prefix or a task id.
    if (state.text) params.search = state.text;
    const list = await listAgents(params);
    const rows = list.items;
    state.cursors[state.page + 1] = list.next_cursor;
    const more = !!list.next_cursor;
    try {
      const projects = await getAll("/v1/projects");
      fillOptions(projectSel, new Set(projects.map((p) => p.name)));
    } catch (e) { /* the filter still works by typing */ }
    fillOptions(providerSel, new Set(rows.map((a) => a.provider)));
    prev.disabled = state.page === 0;
    next.disabled = !more;
    const first = state.page * PAGE + 1;
    info.textContent = rows.length === 0 ? "No agents match." :
      `${first}–${first + rows.length - 1}`;
    const columns = [
      canAct() ? { label: "", cell: (a) => h("input", { type: "checkbox", "aria-label": `select ${a.name}`, "data-select": a.name, checked: state.selected.has(a.id), onchange: (ev) => { if (ev.target.checked) state.selected.add(a.id); else state.selected.delete(a.id); } }) } : null,
      { label: "Name", cell: (a) => h("a", { href: `#/agents/${a.id}` }, a.name) },
      { label: "Status", cell: (a) => badge(a.status) },
      { label: "Project", cell: (a) => a.project, narrow: true },
      { label: "Provider", cell: (a) => a.provider, narrow: true },
      { label: "Mode", cell: (a) => a.mode, narrow: true },
      { label: "Task", cell: (a) => a.task_id || "–", narrow: true },
      { label: "Age", cell: (a) => ago(a.created_at) },
      { label: "Duration", cell: (a) => duration(span(a.started_at, a.finished_at)), narrow: true },
      { label: "Worker / node", cell: (a) => a.node_id ? `${a.node_id}` : "–", narrow: true },
      { label: "Cost", cell: (a) => (a.cost_usd == null ? "–" : `$${Number(a.cost_usd).toFixed(2)}`), num: true, narrow: true },
    ].filter(Boolean);
    tableBox.replaceChildren(table(columns, rows, (a) => ({ "data-agent": a.name, class: a.status === "waiting_for_input" ? "waiting" : "" })));
  }

  let pending = false;
  async function refresh() {
    if (pending) return;
    pending = true;
    try { await load(); ctx.clearError(); } catch (e) { ctx.showError(e); } finally { pending = false; }
  }
  const timer = setInterval(refresh, REFRESH_MS);
  refresh();
  return () => clearInterval(timer);
}

export function queue(ctx) {
  const body = h("div", {});
  ctx.main.replaceChildren(h("h1", {}, "Queue"), body);
  return every(ctx, async () => {
    const q = await get("/v1/queue");
    const rows = [];
    for (const [kind, statuses] of Object.entries(q.by_kind || {})) {
      for (const [status, n] of Object.entries(statuses)) rows.push({ kind, status, n });
    }
    body.replaceChildren(
      h("div", { class: "grid" },
        stat("Pending spawns", String(q.depth), "q-depth"),
        stat("Oldest pending", q.oldest_pending_at ? `${duration(q.oldest_pending_age_seconds)} (${time(q.oldest_pending_at)})` : "–", "q-oldest")),
      h("h2", {}, "Requests by kind and status"),
      table([{ label: "Kind", cell: (r) => r.kind }, { label: "Status", cell: (r) => r.status }, { label: "Count", cell: (r) => String(r.n), num: true }], rows,
        (r) => ({ class: r.status === "failed" ? "waiting" : "" })),
      h("h2", {}, "Control queues per node"),
      table([{ label: "Node", cell: (c) => c.node_id || "(not placed)" }, { label: "Pending", cell: (c) => String(c.depth), num: true },
        { label: "Oldest", cell: (c) => (c.oldest_age_seconds == null ? "–" : duration(c.oldest_age_seconds)), num: true }], q.control_queues || []),
    );
  });
}

export function workers(ctx) {
  const body = h("div", {});
  ctx.main.replaceChildren(h("h1", {}, "Workers"), body);
  return every(ctx, async () => {
    const list = await getAll("/v1/workers");
    body.replaceChildren(table([
      { label: "Node", cell: (w) => w.node_id },
      { label: "Worker", cell: (w) => h("span", { class: "mono" }, w.id) },
      { label: "Status", cell: (w) => h("span", { class: `status s-${w.status === "alive" || w.status === "active" ? "running" : w.status === "draining" ? "waiting_for_input" : "stopped"}` }, w.status) },
      { label: "Lease age", cell: (w) => `${w.lease_age_seconds.toFixed(1)} s`, num: true },
      { label: "Capacity", cell: (w) => String(w.capacity), num: true },
      { label: "Running", cell: (w) => String(w.running), num: true },
      { label: "Host", cell: (w) => w.host, narrow: true },
      { label: "Started", cell: (w) => ago(w.started_at), narrow: true },
    ], list));
  });
}

function accountState(a) {
  if (a.invalid_reason) return h("span", { class: "status s-failed" }, `Invalid: ${a.invalid_reason}`);
  if (a.exhausted_until && new Date(a.exhausted_until) > new Date()) return h("span", { class: "status s-waiting_for_input" }, `Exhausted until ${time(a.exhausted_until)}`);
  if (a.in_use > 0) return h("span", { class: "status s-running" }, `In use (${a.in_use})`);
  return h("span", { class: "status s-completed" }, "Free");
}

export function accounts(ctx) {
  const body = h("div", {});
  ctx.main.replaceChildren(h("h1", {}, "Accounts"), body);
  return every(ctx, async () => {
    const list = await get("/v1/accounts");
    const providers = [...new Set(list.map((a) => a.provider))].sort();
    body.replaceChildren(...(list.length === 0 ? [h("p", { class: "muted" }, "No accounts: agents run on each CLI's own login.")] : []),
      ...providers.map((p) => h("section", {}, h("h2", {}, p), table([
        { label: "Label", cell: (a) => a.label },
        { label: "State", cell: accountState },
        { label: "Kind", cell: (a) => a.kind, narrow: true },
        { label: "Last used", cell: (a) => ago(a.last_used_at), narrow: true },
        canAct() ? { label: "", cell: (a) => h("button", { "data-reset": a.label, onclick: async () => {
          try { await post(`/v1/accounts/${encodeURIComponent(a.label)}/reset`); } catch (e) { ctx.showError(e); }
        } }, "Reset") } : null,
      ].filter(Boolean), list.filter((a) => a.provider === p)))));
  });
}

export function projects(ctx) {
  const body = h("div", {});
  ctx.main.replaceChildren(h("h1", {}, "Projects"), body);
  return every(ctx, async () => {
    const list = await getAll("/v1/projects");
    body.replaceChildren(table([
      { label: "Name", cell: (p) => p.name },
      { label: "Remote", cell: (p) => h("span", { class: "mono" }, p.remote_url) },
      { label: "Branch", cell: (p) => p.default_branch },
      { label: "Added", cell: (p) => ago(p.created_at), narrow: true },
    ], list));
  });
}

export function webhooks(ctx) {
  const body = h("div", {});
  ctx.main.replaceChildren(h("h1", {}, "Webhooks"), body);
  return every(ctx, async () => {
    let list;
    try {
      list = await getAll("/v1/webhooks");
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        body.replaceChildren(h("p", { class: "muted" }, "This server has no webhooks."));
        return;
      }
      throw e;
    }
    const items = list;
    body.replaceChildren(table([
      { label: "URL", cell: (w) => h("span", { class: "mono" }, w.url || "") },
      { label: "Events", cell: (w) => (w.events || []).join(", ") || "all" },
      { label: "Id", cell: (w) => h("span", { class: "mono" }, w.id || ""), narrow: true },
    ], items));
  });
}

// Shows the Webhooks link only when the server has them.
export async function probeWebhooks() {
  try {
    await get("/v1/webhooks");
    document.getElementById("nav-webhooks").hidden = false;
  } catch (e) { /* none */ }
}

export { del };
