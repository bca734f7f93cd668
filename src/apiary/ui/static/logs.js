// Logs of a drone or a whole hive, following live (the API's follow=true chunked stream).
import { eachLine, objectPath, request } from "./api.js";
import { h, hash } from "./dom.js";

const KEEP = 5000; // batches of lines (one text node each) kept on the page

export async function logsPage(ctx, cell, kind, name) {
  const { main, signal } = ctx;
  const pre = h("pre", { id: "log", class: "log", tabindex: "0", "aria-label": `log lines of ${kind} ${name}` });
  const state = h("p", { class: "note", role: "status", id: "log-state" }, "Connecting…");
  const toggle = h("button", { type: "button", id: "follow", "aria-pressed": "true" }, "Pause");
  const back = kind === "hive" ? hash("hive", cell, name) : null;
  main.append(h("h1", {}, `Logs of ${kind} ${name}`), h("p", { class: "links" }, back ? h("a", { href: back }, `‹ Hive ${name}`) : `cell ${cell}`, " ", toggle), state, pre);

  let stream = null;
  const start = async () => {
    stream = new AbortController();
    const both = AbortSignal.any ? AbortSignal.any([signal, stream.signal]) : stream.signal;
    signal.addEventListener("abort", () => stream && stream.abort(), { once: true });
    pre.replaceChildren();
    const path = `${objectPath(`${kind}s`, cell, name)}/logs?tail=500&timestamps=true&follow=true`;
    try {
      const r = await request("GET", path, undefined, { signal: both, raw: true });
      state.textContent = "Following: new lines appear as they are written.";
      main.dataset.ready = "true";
      let pending = [];
      let queued = false;
      await eachLine(r, (line) => {
        pending.push(line + "\n");
        if (queued) return;
        queued = true;
        requestAnimationFrame(() => {
          queued = false;
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          pre.append(pending.join(""));
          pending = [];
          while (pre.childNodes.length > KEEP) pre.firstChild.remove();
          if (atEnd) pre.scrollTop = pre.scrollHeight;
        });
      });
      state.textContent = `The log ended (the ${kind} is gone or the server stopped).`;
    } catch (e) {
      if (!both.aborted) state.textContent = `No logs: ${e.message}`;
      main.dataset.ready = "true";
    }
  };
  toggle.addEventListener("click", () => {
    if (toggle.getAttribute("aria-pressed") === "true") {
      stream.abort();
      toggle.setAttribute("aria-pressed", "false");
      toggle.textContent = "Follow";
      state.textContent = "Paused.";
    } else {
      toggle.setAttribute("aria-pressed", "true");
      toggle.textContent = "Pause";
      start();
    }
  });
  start();
}
