// The console's only way to the server: the public REST API, with the signed-in bearer token.
// The token lives in sessionStorage (this tab only, gone when it closes), never in a cookie
// or localStorage, and is sent only to this origin.

const KEY = "apiary.token";
const TRACE_KEY = "apiary.traceUrl";

export const auth = {
  token: () => sessionStorage.getItem(KEY),
  set(token, traceUrl) {
    sessionStorage.setItem(KEY, token);
    if (traceUrl) sessionStorage.setItem(TRACE_KEY, traceUrl);
    else sessionStorage.removeItem(TRACE_KEY);
  },
  clear() {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(TRACE_KEY);
  },
  traceUrl: () => sessionStorage.getItem(TRACE_KEY),
};

export class ApiError extends Error {
  constructor(status, body) {
    const detail = (body && body.details && body.details[0]) || null;
    const where = detail && detail.field ? ` (${detail.field})` : "";
    super(`${status} ${(body && body.reason) || ""}: ${(body && body.message) || "request failed"}${where}`);
    this.status = status;
    this.body = body;
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

export async function request(method, path, body, { signal, raw = false } = {}) {
  const headers = { Authorization: `Bearer ${auth.token()}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
    cache: "no-store",
  });
  if (!r.ok) {
    let parsed;
    try {
      parsed = await r.json();
    } catch {
      parsed = { message: r.statusText };
    }
    if (r.status === 401) onUnauthorized(parsed);
    throw new ApiError(r.status, parsed);
  }
  if (raw) return r;
  const type = r.headers.get("content-type") || "";
  return type.includes("json") ? r.json() : r.text();
}

export const get = (path, opts) => request("GET", path, undefined, opts);
export const post = (path, body, opts) => request("POST", path, body, opts);
export const put = (path, body, opts) => request("PUT", path, body, opts);
export const del = (path, opts) => request("DELETE", path, undefined, opts);

const enc = encodeURIComponent;

/** The list path of a kind: one cell, or every cell when `cell` is null. */
export function listPath(plural, cell) {
  return cell ? `/api/v1/cells/${enc(cell)}/${plural}` : `/api/v1/${plural}`;
}

export function objectPath(plural, cell, name) {
  return `/api/v1/cells/${enc(cell)}/${plural}/${enc(name)}`;
}

/** One page of a list: `{items, next, rv}`; `next` is the continue token (or null). */
export async function listPage(path, { limit = 100, cont = null, selector = null, signal } = {}) {
  const q = new URLSearchParams({ limit: String(limit) });
  if (cont) q.set("continue", cont);
  if (selector) q.set("labelSelector", selector);
  const body = await get(`${path}?${q}`, { signal });
  const meta = body.metadata || {};
  return { items: body.items || [], next: meta.continue || null, rv: meta.resourceVersion };
}

/** Every page of a list, `limit` at a time (for the small kinds: cells, nodes). */
export async function listAll(path, opts = {}) {
  const items = [];
  let cont = null;
  let rv = null;
  do {
    const page = await listPage(path, { ...opts, cont, limit: opts.limit || 500 });
    items.push(...page.items);
    cont = page.next;
    rv = page.rv;
  } while (cont);
  return { items, rv };
}

const sleep = (ms, signal) =>
  new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal && signal.addEventListener("abort", () => (clearTimeout(t), resolve()), { once: true });
  });

/** Feed `fn` every line of a streaming response body as it arrives. */
export async function eachLine(response, fn) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      fn(line);
    }
  }
  if (buffer) fn(buffer);
}

/**
 * Watch a list path (the API's `watch=true` stream): `onEvent({type, object})` for every change.
 * Without `rv` the server first sends an ADDED per current object, then a BOOKMARK; a stream
 * that ends is resumed from the last version seen, and a 410 (too old) starts over, calling
 * `onReset()` first so the caller drops its cache. Ends when `signal` aborts.
 */
export async function watch(path, { rv = null, selector = null, field = null, signal, onEvent, onReset, onSynced }) {
  let from = rv;
  let delay = 500;
  while (!signal.aborted) {
    const q = new URLSearchParams({ watch: "true" });
    if (from) q.set("resourceVersion", from);
    if (selector) q.set("labelSelector", selector);
    if (field) q.set("fieldSelector", field);
    try {
      const r = await request("GET", `${path}?${q}`, undefined, { signal, raw: true });
      delay = 500;
      let gone = false;
      await eachLine(r, (line) => {
        if (!line.trim() || gone) return;
        const ev = JSON.parse(line);
        if (ev.type === "ERROR") {
          gone = true;
          return;
        }
        const v = ev.object && ev.object.metadata && ev.object.metadata.resourceVersion;
        if (v) from = v;
        if (ev.type === "BOOKMARK") {
          onSynced && onSynced();
          return;
        }
        onEvent(ev);
      });
      if (gone) throw new ApiError(410, { reason: "Gone" });
    } catch (e) {
      if (signal.aborted) return;
      if (e.status === 410) {
        from = null;
        onReset && onReset();
      } else if (e.status === 401 || e.status === 403 || e.status === 404) {
        return; // nothing to watch with this token: the page says so where it lists
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10000);
    }
  }
}

/** Read a Server-Sent Events response: `fn({id, event, data})` per event. */
export async function eachEvent(response, fn) {
  let ev = { id: null, event: "message", data: "" };
  await eachLine(response, (line) => {
    if (line === "") {
      if (ev.data) fn(ev);
      ev = { id: null, event: "message", data: "" };
    } else if (line.startsWith("id:")) ev.id = line.slice(3).trim();
    else if (line.startsWith("event:")) ev.event = line.slice(6).trim();
    else if (line.startsWith("data:")) ev.data += line.slice(5).trim();
  });
}
