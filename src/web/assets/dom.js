// Building the page from data: every piece of text goes in as a text node, never as HTML.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export const STATUS_LABEL = {
  pending: "Pending", starting: "Starting", running: "Running", completed: "Completed",
  waiting_for_input: "Waiting for input", failed: "Failed", crashed: "Crashed", stopped: "Stopped",
};

export const badge = (status) =>
  h("span", { class: `status s-${status}`, "data-status": status }, STATUS_LABEL[status] || status);

export function ago(iso) {
  if (!iso) return "–";
  const s = (Date.now() - new Date(iso).getTime()) / 1000;
  return duration(Math.max(0, s)) + " ago";
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
  return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
}

export function span(a, b) {
  if (!a) return null;
  const end = b ? new Date(b).getTime() : Date.now();
  return (end - new Date(a).getTime()) / 1000;
}

export const time = (iso) => (iso ? new Date(iso).toLocaleString() : "–");

export function table(columns, rows, rowAttrs) {
  return h("div", { class: "table-wrap" },
    h("table", {},
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", { class: c.num ? "num" : c.narrow ? "hide-narrow" : "", scope: "col" }, c.label)))),
      h("tbody", {}, rows.length === 0
        ? h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, "Nothing here yet."))
        : rows.map((r) => h("tr", rowAttrs ? rowAttrs(r) : {},
          columns.map((c) => h("td", { class: c.num ? "num" : c.narrow ? "hide-narrow" : "" }, c.cell(r))))))));
}

export const stat = (label, value, id) =>
  h("div", { class: "stat", id }, h("span", { class: "n" }, value), h("span", { class: "l" }, label));
