// Small DOM helpers: every text goes in as a text node (never as HTML), so nothing an agent
// writes into a payload can become markup or script on the page.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "for") el.htmlFor = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function table(caption, headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows),
  );
}

export function section(title, id, ...children) {
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), ...children);
}

export function age(ts) {
  if (!ts) return "";
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 60) return `${Math.floor(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function ms(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "—";
  return seconds < 1 ? `${(seconds * 1000).toFixed(1)} ms` : `${seconds.toFixed(2)} s`;
}

/** An estimated cost in US dollars, to the millionth (the API gives nano-dollars); "" for none. */
export function usd(value) {
  if (!value) return "";
  if (value < 0.000001) return "<$0.000001";
  return `$${value.toFixed(6).replace(/0+$/, "").replace(/\.$/, "")}`;
}

export function preview(value, max = 160) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  if (text === undefined) return "";
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

export function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}` }, text);
}

export function phaseBadge(phase) {
  const p = phase || "Pending";
  const kind = /Fail|Crash|Error|TimedOut|Rejected/.test(p)
    ? "bad"
    : /Running|Succeeded|Ready|Resolved/.test(p)
      ? "good"
      : /Waiting|Pending|Starting|Replayed/.test(p)
        ? "warn"
        : "";
  return badge(p, kind);
}

let toastTimer = null;
export function toast(message, bad = false) {
  const el = document.getElementById("toast");
  el.textContent = message;
  el.className = bad ? "show bad" : "show";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.className = ""), 6000);
}

/** Run an action from a button: disabled while it runs, its error shown (never swallowed). */
export async function act(button, fn, done) {
  button.disabled = true;
  try {
    const result = await fn();
    if (done) toast(typeof done === "function" ? done(result) : done);
    return result;
  } catch (e) {
    toast(e.message, true);
    return undefined;
  } finally {
    button.disabled = false;
  }
}

/** Coalesce many calls into one per animation frame (watch events come in bursts). */
export function coalesce(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

export const hash = (...parts) => "#/" + parts.map(encodeURIComponent).join("/");
