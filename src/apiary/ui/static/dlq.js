// Dead letters of a hive with show / replay / purge (and replay all), and the hive's sessions
// waiting for a human with approve / reject — the same calls apiaryctl dlq and approve make.
// Dead letters are not a watchable kind: the list is read again when one of the hive's
// sessions changes (a dead letter fails its session; a replay revives it), not on a timer.
import { del, get, listPage, listPath, objectPath, post, watch } from "./api.js";
import { act, age, coalesce, h, hash, phaseBadge, pretty, section, table } from "./dom.js";
import { approvalControls } from "./session.js";

const MAX_PAGES = 20; // sessions of the cell read (500 a page) to find those waiting

export async function dlqPage(ctx, cell, hive) {
  const { main, signal } = ctx;
  const writer = ctx.canWrite(cell);
  const base = `${objectPath("hives", cell, hive)}/dlq`;
  let showAll = false;
  const expanded = new Set(); // letters whose details are open stay open across re-reads
  const lettersBox = h("div");
  const approvalsBox = h("div");
  const all = h("input", { id: "show-all", type: "checkbox" });
  const replayAll = writer ? h("button", { type: "button", id: "replay-all" }, "Replay all pending") : null;
  main.append(
    h("h1", {}, `Dead letters and approvals of ${hive}`),
    h("p", { class: "links" }, h("a", { href: hash("hive", cell, hive) }, `‹ Hive ${hive}`)),
    section("Dead letters", "dlq-title", h("p", {}, all, h("label", { for: "show-all" }, " Show resolved letters too"), " ", replayAll), lettersBox),
    section("Waiting for approval", "approvals-title", approvalsBox),
  );

  const loadLetters = async () => {
    const q = showAll ? "" : "?phase=Pending,Replayed,Failed";
    const { items } = await get(`${base}${q}`, { signal });
    lettersBox.replaceChildren(lettersTable(items, base, cell, writer, () => reload(), expanded));
  };
  const reload = () => loadLetters().catch((e) => !signal.aborted && lettersBox.replaceChildren(h("p", { class: "error", role: "alert" }, e.message)));
  all.addEventListener("change", () => {
    showAll = all.checked;
    reload();
  });
  if (replayAll) {
    replayAll.addEventListener("click", () =>
      act(replayAll, () => post(`${base}/replay`, {}), (r) => `replayed ${r.replayed.length}${r.failed.length ? `, ${r.failed.length} failed` : ""}`).then(reload),
    );
  }

  // The hive's sessions: who waits for approval; any change of one re-reads the dead letters.
  const sessions = new Map();
  let rv = null;
  let cont = null;
  let pages = 0;
  do {
    const page = await listPage(listPath("sessions", cell), { limit: 500, cont, signal });
    for (const s of page.items) if ((s.spec || {}).hiveRef === hive) sessions.set(s.metadata.uid, s);
    cont = page.next;
    rv = rv || page.rv;
  } while (cont && ++pages < MAX_PAGES);
  if (cont) approvalsBox.before(h("p", { class: "note" }, `Only the first ${MAX_PAGES * 500} sessions of cell ${cell} were read; sessions that start waiting from now on are shown.`));
  // Rows are kept per session and changed in place, so a watch event never takes away a reason
  // being typed (or the button about to be pressed).
  const body = h("tbody");
  const approvalsTable = table("", ["Session", "Stage", "Age", "Decision"], [], { id: "approvals" });
  approvalsTable.replaceChild(body, approvalsTable.querySelector("tbody"));
  approvalsBox.replaceChildren(approvalsTable);
  const rows = new Map();
  const empty = h("tr", {}, h("td", { colspan: 4 }, "Nothing waits for approval."));
  const renderApprovals = coalesce(() => {
    const waiting = [...sessions.values()].filter(waits);
    const names = new Set(waiting.map((s) => s.metadata.name));
    for (const [n, row] of rows) if (!names.has(n)) (row.el.remove(), rows.delete(n));
    for (const s of waiting) {
      const n = s.metadata.name;
      if (!rows.has(n)) {
        const stageCell = h("td");
        const current = { stage: "" };
        const el = h(
          "tr",
          { dataset: { session: n } },
          h("th", { scope: "row" }, h("a", { href: hash("session", cell, n) }, n)),
          stageCell,
          h("td", {}, age(s.metadata.creationTimestamp)),
          h("td", {}, writer ? approvalControls(cell, n, () => current.stage) : "—"),
        );
        rows.set(n, { el, stageCell, current });
        body.append(el);
      }
      const row = rows.get(n);
      row.current.stage = s.status.pendingApproval || "";
      row.stageCell.textContent = row.current.stage;
    }
    if (rows.size) empty.remove();
    else body.append(empty);
    approvalsTable.querySelector("caption").textContent = `${rows.size} sessions waiting`;
  });
  await loadLetters();
  renderApprovals();
  main.dataset.ready = "true";
  let again = null;
  watch(listPath("sessions", cell), {
    rv,
    signal,
    onEvent: (ev) => {
      if ((ev.object.spec || {}).hiveRef !== hive) return;
      if (ev.type === "DELETED") sessions.delete(ev.object.metadata.uid);
      else sessions.set(ev.object.metadata.uid, ev.object);
      renderApprovals();
      clearTimeout(again);
      again = setTimeout(reload, 300);
    },
  });
}

/** A session waits while `pendingApproval` names a stage (the phase alone can outlive a
 * rejection: the flow failed but the session keeps its last phase). */
export const waits = (s) => (s.status || {}).phase === "WaitingForApproval" && !!(s.status || {}).pendingApproval;

function lettersTable(items, base, cell, writer, reload, expanded) {
  const rows = [];
  for (const dl of items) {
    const spec = dl.spec || {};
    const id = dl.metadata.name;
    const phase = (dl.status || {}).phase || "Pending";
    const details = h(
      "tr",
      { hidden: !expanded.has(id), class: "details", id: `details-${id}` },
      h("td", { colspan: 8 }, h("p", {}, spec.message || ""), h("pre", {}, pretty(spec.original))),
    );
    const show = h("button", { type: "button", "aria-expanded": String(expanded.has(id)), "aria-controls": `details-${id}` }, "Show");
    show.addEventListener("click", () => {
      details.hidden = !details.hidden;
      show.setAttribute("aria-expanded", String(!details.hidden));
      if (details.hidden) expanded.delete(id);
      else expanded.add(id);
    });
    const actions = [show];
    if (writer) {
      const replay = phase === "Pending" ? h("button", { type: "button", class: "replay" }, "Replay") : null;
      replay?.addEventListener("click", () => act(replay, () => post(`${base}/${encodeURIComponent(id)}/replay`, {}), `${id} replayed`).then(reload));
      const purge = h("button", { type: "button", class: "purge danger" }, "Purge");
      purge.addEventListener("click", async () => {
        if (!confirm(`Purge ${id}? Its flow fails for good.`)) return;
        await act(purge, () => del(`${base}/${encodeURIComponent(id)}`), `${id} purged`);
        reload();
      });
      actions.push(...(replay ? [replay] : []), purge);
    }
    rows.push(
      h(
        "tr",
        { dataset: { letter: id } },
        h("th", { scope: "row" }, id),
        h("td", {}, h("a", { href: hash("session", cell, spec.session) }, spec.session)),
        h("td", {}, spec.stage || ""),
        h("td", {}, spec.reason || ""),
        h("td", { class: "num" }, String(spec.attempts ?? "")),
        h("td", {}, phaseBadge(phase)),
        h("td", {}, age(dl.metadata.creationTimestamp)),
        h("td", { class: "actions" }, actions),
      ),
      details,
    );
  }
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 8 }, "No dead letters.")));
  return table(`${items.length} dead letters`, ["Letter", "Session", "Stage", "Reason", "Attempts", "Phase", "Age", "Actions"], rows, { id: "letters" });
}


