// Dead letters of a hive with show / replay / purge (and replay all), and the hive's sessions
// waiting for a human with approve / reject — the same calls apiaryctl dlq and approve make.
// Dead letters are not a watchable kind: the list is read again when one of the hive's
// sessions changes (a dead letter fails its session; a replay revives it), not on a timer.
import { del, get, listPage, listPath, objectPath, post, watch } from "./api.js";
import { act, age, coalesce, h, hash, phaseBadge, pretty, section, table } from "./dom.js";
import { approvalControls } from "./session.js";

export async function dlqPage(ctx, cell, hive) {
  const { main, signal } = ctx;
  const writer = ctx.canWrite(cell);
  const base = `${objectPath("hives", cell, hive)}/dlq`;
  let showAll = false;
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
    lettersBox.replaceChildren(lettersTable(items, base, cell, writer, () => reload()));
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
  do {
    const page = await listPage(listPath("sessions", cell), { limit: 500, cont, signal });
    for (const s of page.items) if ((s.spec || {}).hiveRef === hive) sessions.set(s.metadata.uid, s);
    cont = page.next;
    rv = rv || page.rv;
  } while (cont);
  const renderApprovals = coalesce(() => {
    const waiting = [...sessions.values()].filter((s) => (s.status || {}).phase === "WaitingForApproval");
    const rows = waiting.map((s) =>
      h(
        "tr",
        { dataset: { session: s.metadata.name } },
        h("th", { scope: "row" }, h("a", { href: hash("session", cell, s.metadata.name) }, s.metadata.name)),
        h("td", {}, s.status.pendingApproval || ""),
        h("td", {}, age(s.metadata.creationTimestamp)),
        h("td", {}, writer ? approvalControls(cell, s.metadata.name, s.status.pendingApproval) : "—"),
      ),
    );
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 4 }, "Nothing waits for approval.")));
    approvalsBox.replaceChildren(table(`${waiting.length} sessions waiting`, ["Session", "Stage", "Age", "Decision"], rows, { id: "approvals" }));
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

function lettersTable(items, base, cell, writer, reload) {
  const rows = [];
  for (const dl of items) {
    const spec = dl.spec || {};
    const id = dl.metadata.name;
    const phase = (dl.status || {}).phase || "Pending";
    const details = h(
      "tr",
      { hidden: true, class: "details", id: `details-${id}` },
      h("td", { colspan: 8 }, h("p", {}, spec.message || ""), h("pre", {}, pretty(spec.original))),
    );
    const show = h("button", { type: "button", "aria-expanded": "false", "aria-controls": `details-${id}` }, "Show");
    show.addEventListener("click", () => {
      details.hidden = !details.hidden;
      show.setAttribute("aria-expanded", String(!details.hidden));
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


