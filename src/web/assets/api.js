// The API client of the page: same-origin fetches carrying the session cookie, the CSRF
// token on every change, and errors turned into messages.
export const session = { csrf: null, role: null, authRequired: false };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export async function call(method, path, body) {
  const headers = {};
  if (method !== "GET" && session.csrf) headers["x-csrf-token"] = session.csrf;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
    });
  } catch (e) {
    throw new ApiError(0, "network", "the server cannot be reached");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(response.status, err.code || "error",
      err.message || `${method} ${path} answered ${response.status}`);
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
export const del = (path) => call("DELETE", path);

export async function loadSession() {
  const s = await call("GET", "/web/session");
  session.csrf = s.csrf || null;
  session.role = s.role || null;
  session.authRequired = s.auth_required;
  return s;
}

export const canAct = () => session.role === "full";

// One page of agents, newest first: `{items, next_cursor}` (`params` become the query; a
// list value repeats its parameter).
export async function listAgents(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== undefined && v !== null && v !== "") q.set(k, v);
  }
  const data = await get(`/v1/agents${q.toString() ? "?" + q : ""}`);
  return { items: data.items || [], next_cursor: data.next_cursor || null };
}

// Every item of a short list (projects, workers, webhooks), page after page.
export async function getAll(path) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await get(`${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...(page.items || []));
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}
