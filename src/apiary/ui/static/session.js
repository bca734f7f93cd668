// Session: input and final output, the transcript as a causal tree (every entry under the one
// it answers: input → dispatch → output → next dispatch…), each hop with stage, drone,
// attempt, latency, tokens (by model, as the gateway counted them) and estimated cost, failed
// attempts and guardrail violations marked; the session's total tokens and cost; Comb
// contents; approve/reject when it waits; a trace link when a template was given at sign-in.
import { auth, get, listPath, objectPath, post, request, eachEvent, watch } from "./api.js";
import { act, badge, coalesce, h, hash, ms, phaseBadge, pretty, preview, section, table, usd } from "./dom.js";

const GUARDRAILS = new Set(["ResponseTimeout", "OutputSchemaViolation", "TokenBudgetExceeded", "RateLimited", "MaxTurnsExceeded", "CircuitOpen"]);

export async function sessionPage(ctx, cell, name) {
  const { main, signal } = ctx;
  const path = objectPath("sessions", cell, name);
  let session = await get(path, { signal });
  const transcript = await get(`${path}/transcript`, { signal });
  const entries = new Map(transcript.items.map((e) => [e.seq, e]));
  let last = transcript.items.reduce((m, e) => Math.max(m, e.seq), 0);

  const summary = h("div", { id: "summary" });
  const io = h("div", { id: "io" });
  const approvals = h("div", { id: "approval" });
  const tree = h("div", { id: "timeline" });
  const comb = h("div", { id: "comb" });
  main.append(
    h("h1", {}, `Session ${name}`),
    summary,
    approvals,
    section("Input and output", "io-title", io),
    section("Timeline", "timeline-title", h("p", { class: "note" }, "Each entry sits under the one it answers. Failed attempts and guardrail violations are marked."), tree),
    section("Comb (session memory)", "comb-title", comb),
  );

  let shownWait = null;
  const render = coalesce(() => {
    const st = session.status || {};
    const hive = (session.spec || {}).hiveRef;
    const items = [...entries.values()].sort((a, b) => a.seq - b.seq);
    const usage = items.reduce((u, e) => ({ p: u.p + ((e.usage || {}).promptTokens || 0), c: u.c + ((e.usage || {}).completionTokens || 0), usd: u.usd + (e.costUsd || 0) }), { p: 0, c: 0, usd: 0 });
    summary.replaceChildren(
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Phase"),
        h("dd", { id: "phase" }, phaseBadge(st.phase), st.reason && st.reason !== st.phase ? ` ${st.reason}` : ""),
        st.message ? [h("dt", {}, "Message"), h("dd", {}, st.message)] : null,
        h("dt", {}, "Hive"),
        h("dd", {}, h("a", { href: hash("hive", cell, hive) }, hive)),
        h("dt", {}, "Entries"),
        h("dd", {}, String(items.length)),
        h("dt", {}, "Tokens"),
        h("dd", { id: "tokens" }, `${usage.p} prompt + ${usage.c} completion`),
        h("dt", {}, "Cost"),
        h("dd", { id: "cost" }, usage.usd ? `${usd(usage.usd)} (estimated)` : "—"),
        traceLink(items),
      ),
    );
    const input = items.find((e) => e.kind === "input");
    const finals = items.filter((e) => e.kind === "final");
    io.replaceChildren(
      h("h3", {}, "Input"),
      h("pre", { id: "input" }, input ? pretty(input.message.payload) : pretty((session.spec || {}).input ?? "")),
      h("h3", {}, "Final output"),
      h("pre", { id: "output" }, finals.length ? pretty(finals[finals.length - 1].message.payload) : st.output !== undefined ? pretty(st.output) : "(none yet)"),
    );
    const waitingFor = `${st.phase}/${st.pendingApproval || ""}`;
    if (waitingFor !== shownWait) {
      shownWait = waitingFor; // rebuilt only when what waits changes: a typed reason stays
      approvals.replaceChildren(approvalBox(ctx, cell, name, st));
    }
    tree.replaceChildren(timeline(items));
  });
  render();
  main.dataset.ready = "true";

  showComb(comb, path, signal);
  // A change of the session object wakes the stream below when it waits (see there).
  let wake = () => {};
  watch(listPath("sessions", cell), {
    field: `metadata.name=${name}`,
    signal,
    onEvent: (ev) => {
      if (ev.type !== "DELETED") session = ev.object;
      render();
      wake();
    },
  });
  // New entries as they are written: the session's event stream, resumed after the last seq.
  // The server ends it when the session ends; a replay or a new input may revive the session,
  // so the next change of the Session object reconnects it (never a timer). A broken
  // connection is retried with a growing pause.
  (async () => {
    let pause = 500;
    while (!signal.aborted) {
      const changed = new Promise((resolve) => (wake = resolve));
      try {
        const r = await request("GET", `${path}/stream?after=${last}`, undefined, { signal, raw: true });
        pause = 500;
        await eachEvent(r, (ev) => {
          const e = JSON.parse(ev.data);
          last = Math.max(last, e.seq);
          entries.set(e.seq, e);
          render();
        });
        await changed;
      } catch (e) {
        if (signal.aborted || e.status === 404 || e.status === 403) return;
        await new Promise((r) => setTimeout(r, pause));
        pause = Math.min(pause * 2, 10000);
      }
    }
  })();
}

/** The traces of the session's inputs (one per input that carried or got a traceparent). */
function traceLink(items) {
  const template = auth.traceUrl();
  const ids = [...new Set(items.filter((e) => e.kind === "input" && e.message && e.message.traceparent).map((e) => e.message.traceparent.split("-")[1]))];
  if (!ids.length) return null;
  const links = ids.slice(0, 10).map((id) =>
    template ? h("a", { href: template.replace("{traceId}", id), rel: "noreferrer", target: "_blank", class: "trace" }, id) : h("code", { class: "trace" }, id),
  );
  return [h("dt", {}, ids.length > 1 ? "Traces" : "Trace"), h("dd", { id: "traces" }, links.flatMap((l, i) => (i ? [" ", l] : [l])))];
}

function entryLine(e) {
  const msg = e.message || {};
  const payload = msg.payload;
  const failed = e.kind === "error" || (e.kind === "event" && msg.type === "error");
  const reason = failed && payload && typeof payload === "object" ? payload.reason : null;
  // the router counts attempts from 0: the first attempt is "attempt 1" here
  const raw = payload && typeof payload === "object" && Number.isInteger(payload.attempt) ? payload.attempt : null;
  const attempt = raw === null ? null : raw + 1;
  const marks = [];
  if (failed) marks.push(badge(e.kind === "error" ? "error" : `failed attempt${attempt ? ` ${attempt}` : ""}`, "bad"));
  if (reason && GUARDRAILS.has(reason)) marks.push(badge(`guardrail: ${reason}`, "bad"));
  else if (reason) marks.push(badge(reason, "warn"));
  const usage = e.usage || {};
  const tokens = (usage.promptTokens || 0) + (usage.completionTokens || 0);
  const byModel = Object.entries(e.usageByModel || {}).map(([m, u]) => `${m}: ${u.promptTokens} prompt + ${u.completionTokens} completion`);
  const tokenText = `${tokens} tokens (${usage.promptTokens || 0} + ${usage.completionTokens || 0})`;
  return h(
    "div",
    { class: `entry ${e.kind}${failed ? " failed" : ""}`, dataset: { kind: e.kind, seq: e.seq } },
    h("span", { class: "seq" }, `#${e.seq}`),
    badge(e.kind, e.kind === "final" ? "good" : ""),
    e.stage ? h("span", { class: "stage-name" }, e.stage) : null,
    e.drone ? h("span", { class: "drone" }, e.drone) : null,
    e.latencyMs !== null && e.latencyMs !== undefined ? h("span", { class: "num" }, ms(e.latencyMs / 1000)) : null,
    tokens ? h("span", { class: "num tokens", title: byModel.join("\n") || null }, tokenText) : null,
    byModel.length ? h("span", { class: "models" }, Object.keys(e.usageByModel).join(", ")) : null,
    e.costUsd ? h("span", { class: "num cost" }, usd(e.costUsd)) : null,
    marks,
    h("code", { class: "payload" }, preview(payload)),
  );
}

/** Entries nested under their parent (by id); an entry whose parent is unknown is a root. */
export function timeline(items) {
  const ids = new Set(items.map((e) => e.id));
  const children = new Map();
  const roots = [];
  for (const e of items) {
    if (e.parent && ids.has(e.parent) && e.parent !== e.id) {
      if (!children.has(e.parent)) children.set(e.parent, []);
      children.get(e.parent).push(e);
    } else roots.push(e);
  }
  const seen = new Set();
  const list = (nodes) =>
    h(
      "ol",
      { class: "tree" },
      nodes.map((e) => {
        if (seen.has(e.seq)) return null;
        seen.add(e.seq);
        const kids = children.get(e.id) || [];
        return h("li", {}, entryLine(e), kids.length ? list(kids) : null);
      }),
    );
  return items.length ? list(roots) : h("p", {}, "No entries yet.");
}

function approvalBox(ctx, cell, name, st) {
  if (st.phase !== "WaitingForApproval" || !st.pendingApproval) return h("span");
  const stage = st.pendingApproval || "";
  if (!ctx.canWrite(cell)) return h("p", { class: "note", role: "status" }, `Waiting for approval of stage ${stage}. This token may not approve.`);
  return approvalControls(cell, name, stage);
}

/**
 * Approve / reject (with a reason) for one session; used here and on the approvals page.
 * `stage` is the stage that waits, or a function giving it when pressed (it may change).
 */
export function approvalControls(cell, name, stage) {
  const base = objectPath("sessions", cell, name);
  const stageNow = typeof stage === "function" ? stage : () => stage;
  const id = `reason-${name}`;
  const reason = h("input", { id, type: "text", placeholder: "why (optional)" });
  const approve = h("button", { type: "button", class: "approve" }, "Approve");
  const reject = h("button", { type: "button", class: "reject" }, "Reject");
  const which = () => (stageNow() ? { stage: stageNow() } : {});
  approve.addEventListener("click", () => act(approve, () => post(`${base}/approve`, which()), (r) => `approved: ${r.released} released`));
  reject.addEventListener("click", () =>
    act(reject, () => post(`${base}/reject`, { ...which(), ...(reason.value ? { reason: reason.value } : {}) }), (r) => `rejected: ${r.rejected}`),
  );
  const label = typeof stage === "function" ? "Waiting for approval" : `Waiting for approval of stage ${stage}`;
  return h("div", { class: "approval", role: "group", "aria-label": `approval of session ${name}` }, h("span", {}, label), approve, h("label", { for: id }, "Reason"), reason, reject);
}

async function showComb(box, path, signal) {
  try {
    const { keys, usageBytes, limitBytes } = await get(`${path}/comb?pattern=*`, { signal });
    const shown = keys.slice(0, 50);
    const values = await Promise.all(shown.map((k) => get(`${path}/comb/${encodeURIComponent(k)}`, { signal }).catch((e) => ({ value: `(${e.message})` }))));
    const rows = shown.map((k, i) => h("tr", {}, h("th", { scope: "row" }, k), h("td", {}, h("code", {}, preview(values[i].value, 300)))));
    box.replaceChildren(
      h("p", { class: "note" }, `${keys.length} keys, ${usageBytes} of ${limitBytes} bytes${keys.length > 50 ? "; the first 50 shown" : ""}.`),
      rows.length ? table("Comb keys", ["Key", "Value"], rows) : h("p", {}, "Empty."),
    );
  } catch (e) {
    if (!signal.aborted) box.replaceChildren(h("p", { class: "note" }, `Comb not shown: ${e.message}`));
  }
}
