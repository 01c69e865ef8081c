// One agent: its header, its conversation following the event stream live, its pending
// questions with an answer form, its actions, its diff and its raw events.
import { get, getAll, post, del, canAct, session, ApiError } from "./api.js";
import { h, badge, time, duration, span } from "./dom.js";
import { markdown } from "./markdown.js";

const MAX_ENTRIES = 2000; // the conversation keeps the tail; older entries are counted
const MAX_RAW = 500;
const MAX_DIFF_LINES = 4000;
const FINAL = new Set(["completed", "waiting_for_input", "failed", "crashed", "stopped"]);

// Reads `/v1/agents/{id}/events` as a stream of `{seq, kind, data}`, from after `after`.
async function follow(id, after, onEvent, signal) {
  const headers = { accept: "text/event-stream" };
  if (after > 0) headers["last-event-id"] = String(after);
  const response = await fetch(`/v1/agents/${id}/events`, { headers, signal, credentials: "same-origin" });
  if (!response.ok) {
    let message = `the event stream answered ${response.status}`;
    try { message = (await response.json()).error.message; } catch (e) { /* keep */ }
    throw new ApiError(response.status, "error", message);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let kind = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) kind = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length === 0) continue;
      let parsed;
      try { parsed = JSON.parse(data.join("\n")); } catch (e) { continue; }
      if (kind === "error") throw new ApiError(503, "unavailable", parsed.error && parsed.error.message || "stream error");
      onEvent(parsed);
    }
  }
}

function conversation() {
  const box = h("div", { id: "conversation", class: "conversation panel", "aria-live": "polite", tabindex: "0" });
  const hidden = h("p", { id: "conversation-hidden", class: "muted small", hidden: true });
  const tools = new Map();
  let dropped = 0;
  let count = 0;
  const add = (el) => {
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    box.append(el);
    count++;
    while (count > MAX_ENTRIES) {
      box.firstElementChild.remove();
      count--;
      dropped++;
    }
    if (dropped) {
      hidden.hidden = false;
      hidden.textContent = `${dropped} earlier entries are not shown (see the raw events or agentfleet logs).`;
    }
    if (atBottom) box.scrollTop = box.scrollHeight;
  };
  const render = (ev) => {
    const d = ev.data || {};
    switch (ev.kind) {
      case "assistant_text":
        add(h("div", { class: "entry assistant", "data-seq": ev.seq }, markdown(d.text || "")));
        break;
      case "tool_use": {
        const input = JSON.stringify(d.input);
        const out = h("div", { class: "tool-output" });
        const el = h("details", { class: "entry tool", "data-seq": ev.seq },
          h("summary", {}, `${d.name} ${input.length > 120 ? input.slice(0, 120) + "…" : input}`),
          h("h4", { class: "small muted" }, "Input"), h("pre", {}, JSON.stringify(d.input, null, 2)), out);
        if (d.id) tools.set(d.id, el);
        add(el);
        break;
      }
      case "tool_result": {
        const el = d.tool_use_id && tools.get(d.tool_use_id);
        const content = h("pre", {}, (d.content || "").length > 20000 ? d.content.slice(0, 20000) + "\n…" : d.content || "");
        if (el) {
          el.querySelector(".tool-output").append(h("h4", { class: "small muted" }, d.is_error ? "Output (error)" : "Output"), content);
          if (d.is_error) el.classList.add("failed");
        } else {
          add(h("details", { class: `entry tool${d.is_error ? " failed" : ""}`, "data-seq": ev.seq }, h("summary", {}, "tool output"), content));
        }
        break;
      }
      case "result":
        add(h("div", { class: d.success === false ? "entry error" : "entry result", "data-seq": ev.seq },
          h("strong", {}, d.success === false ? "" : "Result: "), markdown(d.text || "")));
        break;
      case "error":
      case "auth_failed":
        add(h("div", { class: "entry error", "data-seq": ev.seq }, d.message || JSON.stringify(d)));
        break;
      case "rate_limited":
        add(h("div", { class: "entry error", "data-seq": ev.seq }, `Rate limited: ${d.message || ""}`));
        break;
      case "raw":
        add(h("div", { class: "entry system mono", "data-seq": ev.seq }, d.line || ""));
        break;
      case "usage":
        break;
      default:
        add(h("div", { class: "entry system", "data-seq": ev.seq }, `${ev.kind}${d.status ? `: ${d.status}` : ""}${d.message ? `: ${d.message}` : ""}`));
    }
  };
  return { el: h("div", {}, hidden, box), render };
}

function renderDiff(data) {
  let text = "";
  if (typeof data === "string") text = data;
  else if (data && typeof data.diff === "string") text = data.diff;
  else if (data && typeof data.patch === "string") text = data.patch + (data.truncated ? "\n(cut at the server's size limit)" : "");
  else if (data && Array.isArray(data.files)) text = data.files.map((f) => f.patch || f.diff || `${f.path}`).join("\n");
  if (!text.trim()) return h("p", { class: "muted" }, "No changes on the agent's branch.");
  const lines = text.split("\n");
  const files = lines.filter((l) => l.startsWith("diff --git")).length;
  const pre = h("pre", { class: "diff panel", id: "diff" });
  const show = (n) => {
    pre.replaceChildren(...lines.slice(0, n).map((l) => h("div", {
      class: l.startsWith("diff --git") ? "file" : l.startsWith("@@") ? "hunk" : l.startsWith("+") ? "add" : l.startsWith("-") ? "del" : "",
    }, l || " ")));
  };
  show(MAX_DIFF_LINES);
  const more = lines.length > MAX_DIFF_LINES
    ? h("button", { onclick: (ev) => { show(lines.length); ev.target.remove(); } }, `Show all ${lines.length} lines`) : null;
  return h("div", {}, h("p", { class: "muted small" }, `${files} file(s), ${lines.length} lines`), pre, more);
}

export function agentView(ctx) {
  const id = ctx.params[0];
  const abort = new AbortController();
  const header = h("div", { id: "agent-header" });
  const questions = h("div", { id: "questions" });
  const actions = h("div", { class: "actions", id: "agent-actions" });
  const liveMark = h("span", { class: "live", id: "live" }, "not following");
  const conv = conversation();
  const raw = h("pre", { id: "raw-events", class: "panel" });
  const diffBox = h("div", { id: "diff-box" }, h("p", { class: "muted" }, "Loading the diff…"));
  let lastSeq = 0;
  let following = false;
  let agent = null;
  let rawCount = 0;
  let answered = null;
  let lastDiffKey = null;

  ctx.main.replaceChildren(
    h("p", {}, h("a", { href: "#/agents" }, "← Agents")),
    header, questions, actions,
    h("h2", {}, "Conversation ", liveMark), conv.el,
    h("h2", {}, "Diff"), diffBox,
    h("details", {}, h("summary", {}, "Raw events"), raw));

  const onEvent = (ev) => {
    if (ev.seq <= lastSeq) return;
    lastSeq = ev.seq;
    conv.render(ev);
    raw.append(JSON.stringify(ev) + "\n");
    rawCount++;
    if (rawCount > MAX_RAW) raw.firstChild.remove();
  };

  async function stream() {
    if (following) return;
    following = true;
    liveMark.textContent = "live";
    liveMark.classList.add("on");
    try {
      await follow(id, lastSeq, onEvent, abort.signal);
    } catch (e) {
      if (!abort.signal.aborted) ctx.showError(e);
    } finally {
      following = false;
      liveMark.textContent = "ended";
      liveMark.classList.remove("on");
    }
  }

  function renderHeader(a, projects, accounts) {
    const project = projects.find((p) => p.name === a.project);
    const account = a.account_id && accounts.find((x) => x.id === a.account_id);
    header.replaceChildren(
      h("h1", {}, a.name, " ", h("span", { id: "agent-status" }, badge(a.status))),
      h("dl", { class: "meta panel" },
        h("dt", {}, "Id"), h("dd", { class: "mono" }, a.id),
        h("dt", {}, "Project / provider / mode"), h("dd", {}, `${a.project} / ${a.provider} / ${a.mode}`),
        h("dt", {}, "Task"), h("dd", {}, a.task_id || "–"),
        h("dt", {}, "Created"), h("dd", {}, time(a.created_at)),
        h("dt", {}, "Started"), h("dd", {}, time(a.started_at)),
        h("dt", {}, "Finished"), h("dd", {}, a.finished_at ? `${time(a.finished_at)} (ran ${duration(span(a.started_at, a.finished_at))})` : "–"),
        h("dt", {}, "Branch"), h("dd", { class: "mono" }, a.branch),
        h("dt", {}, "Base"), h("dd", { class: "mono" }, (project ? project.default_branch : "–") + (a.base_commit ? ` @ ${a.base_commit.slice(0, 12)}` : "")),
        h("dt", {}, "Pushed"), h("dd", { class: "mono", id: "pushed-commit" }, a.pushed_commit ? a.pushed_commit.slice(0, 12) : "–"),
        h("dt", {}, "Session"), h("dd", { class: "mono" }, a.session_id || "–"),
        h("dt", {}, "Account"), h("dd", {}, account ? `${account.provider}/${account.label}` : a.account_id || "the CLI's own login"),
        h("dt", {}, "Trace"), h("dd", { class: "mono" }, a.trace_id || "–"),
        h("dt", {}, "Worker / node"), h("dd", { class: "mono" }, a.worker_id ? `${a.worker_id} on ${a.node_id}` : "–"),
        a.error ? [h("dt", {}, "Error"), h("dd", { class: "entry error" }, a.error)] : null,
        a.prompt ? [h("dt", {}, "Prompt"), h("dd", {}, h("details", {}, h("summary", {}, a.prompt.split("\n")[0].slice(0, 100)), h("pre", {}, a.prompt)))] : null,
      ));
  }

  function renderQuestions(a) {
    const waiting = a.status === "waiting_for_input" && a.pending_questions.length > 0;
    const resumePending = (a.pending_requests || []).some((r) => r.kind === "resume");
    if (!waiting) {
      questions.replaceChildren();
      return;
    }
    const key = a.pending_questions.map((q) => q.id).join("|") + resumePending;
    if (answered === key) return; // keep what is being typed
    answered = key;
    const fields = a.pending_questions.map((q) => h("label", {}, h("span", { class: "q" }, q.question),
      h("textarea", { id: `answer-${q.id}`, name: q.id, required: true, disabled: !canAct() || resumePending })));
    const note = h("p", { class: "muted small", role: "status", id: "answer-status" }, resumePending ? "Answer sent; the agent resumes shortly." : "");
    const form = h("form", { class: "panel questions", onsubmit: async (ev) => {
      ev.preventDefault();
      const answers = {};
      for (const q of a.pending_questions) answers[q.id] = form.querySelector(`[name="${CSS.escape(q.id)}"]`).value;
      try {
        await post(`/v1/agents/${a.id}/resume`, { answers });
        note.textContent = "Answer sent; the agent resumes shortly.";
        refresh();
      } catch (e) { ctx.showError(e); }
    } }, h("h2", {}, "Questions"), fields,
    canAct() ? h("button", { id: "answer-submit", class: "primary", type: "submit", disabled: resumePending }, "Answer and resume")
      : h("p", { class: "muted" }, "Read-only: answering needs a full token."), note);
    questions.replaceChildren(form);
  }

  function renderActions(a) {
    if (!canAct()) {
      actions.replaceChildren(h("p", { class: "muted small" }, "Read-only: no actions."));
      return;
    }
    const act = (label, fn, attrs) => h("button", { ...attrs, onclick: async (ev) => {
      ev.target.disabled = true;
      try { await fn(); await refresh(); } catch (e) { ctx.showError(e); } finally { ev.target.disabled = false; }
    } }, label);
    const running = !FINAL.has(a.status) || a.status === "waiting_for_input";
    const confirm = h("span", { class: "actions", hidden: true },
      "Delete this agent, its checkout and records? ",
      act("Delete", async () => { await del(`/v1/agents/${a.id}`); location.hash = "#/agents"; }, { id: "delete-confirm", class: "danger" }),
      h("button", { onclick: () => { confirm.hidden = true; } }, "Cancel"));
    actions.replaceChildren(
      running ? act("Stop", () => post(`/v1/agents/${a.id}/stop`), { id: "stop", class: "danger" }) : null,
      a.dismissed ? null : act("Dismiss", () => post(`/v1/agents/${a.id}/dismiss`), { id: "dismiss" }),
      h("button", { id: "delete", class: "danger", onclick: () => { confirm.hidden = false; } }, "Delete…"),
      confirm);
  }

  let extras = { projects: [], accounts: [] };
  let lastKey = "";
  async function refresh() {
    agent = await get(`/v1/agents/${encodeURIComponent(id)}`);
    const key = JSON.stringify([agent.status, agent.finished_at, agent.pending_requests, agent.dismissed, agent.session_id, agent.pushed_commit]);
    if (key !== lastKey) {
      lastKey = key;
      renderHeader(agent, extras.projects, extras.accounts);
      renderQuestions(agent);
      renderActions(agent);
    }
    if (!following && (!FINAL.has(agent.status) || lastSeq === 0)) stream();
    // The diff changes when a run ends (and pushes): read it again then.
    const diffKey = JSON.stringify([agent.status, agent.pushed_commit]);
    if (diffKey !== lastDiffKey) {
      lastDiffKey = diffKey;
      loadDiff();
    }
  }

  async function loadDiff() {
    try {
      diffBox.replaceChildren(renderDiff(await get(`/v1/agents/${agent.id}/diff`)));
    } catch (e) {
      diffBox.replaceChildren(h("p", { class: "muted" }, e.status === 404 && /route/.test(e.message) ? "This server does not show diffs." : e.message));
    }
  }

  (async () => {
    try {
      const [projects, accounts] = await Promise.all([
        getAll("/v1/projects").catch(() => []), get("/v1/accounts").catch(() => []),
      ]);
      extras = { projects, accounts };
      await refresh();
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        header.replaceChildren(h("h1", {}, "No such agent"), h("p", {}, e.message));
      } else ctx.showError(e);
    }
  })();
  const timer = setInterval(() => { refresh().catch((e) => ctx.showError(e)); }, 2000);
  return () => { clearInterval(timer); abort.abort(); };
}

export { session };
