// Sessions of a cell, 100 a page (the list API's limit/continue: a cell with 10,000 sessions is
// read a page at a time), the shown rows kept current through a watch from the list's version.
import { listPage, listPath, watch } from "./api.js";
import { age, coalesce, h, hash, phaseBadge, table, usd } from "./dom.js";
import { continueOf, pagerLinks, rememberNext } from "./pager.js";

const PAGE = 100;

export async function sessionsPage(ctx, cell, pageArg) {
  const { main, signal } = ctx;
  const pageNo = Number(pageArg || 0);
  const key = `apiary.sessionPages.${cell}`;
  const page = await listPage(listPath("sessions", cell), { limit: PAGE, cont: continueOf(key, pageNo), signal });
  rememberNext(key, pageNo, page.next);
  const shown = new Map(page.items.map((s) => [s.metadata.uid, s]));
  let added = 0;
  const box = h("div");
  const news = h("p", { class: "note", role: "status", id: "new-sessions" });
  const base = hash("sessions", cell);
  main.append(
    h("h1", {}, `Sessions of cell ${cell}`),
    news,
    box,
    h("nav", { class: "pager", "aria-label": "Session pages" }, pagerLinks(base, pageNo, PAGE, page.items.length, page.next, "sessions")),
  );
  const render = coalesce(() => {
    const rows = [...shown.values()].map((s) => {
      const st = s.status || {};
      const hive = (s.spec || {}).hiveRef;
      const usage = st.usage || {};
      return h(
        "tr",
        { dataset: { session: s.metadata.name } },
        h("th", { scope: "row" }, h("a", { href: hash("session", cell, s.metadata.name) }, s.metadata.name)),
        h("td", {}, hive ? h("a", { href: hash("hive", cell, hive) }, hive) : ""),
        h("td", {}, s.deleted ? "deleted" : phaseBadge(st.phase), st.reason && st.reason !== st.phase ? ` ${st.reason}` : ""),
        h("td", { class: "num" }, String(st.messageCount ?? "")),
        h("td", { class: "num" }, String(usage.totalTokens ?? "")),
        h("td", { class: "num cost" }, usd(usage.costUsd)),
        h("td", {}, age(s.metadata.creationTimestamp)),
      );
    });
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 7 }, "No sessions.")));
    box.replaceChildren(table(`${shown.size} sessions on this page`, ["Session", "Hive", "Phase", "Messages", "Tokens", "Cost", "Age"], rows, { id: "session-list" }));
    news.textContent = added ? `${added} sessions created since this page was read (they are listed in name order: reload to see them in place).` : "";
  });
  render();
  main.dataset.ready = "true";
  watch(listPath("sessions", cell), {
    rv: page.rv,
    signal,
    onEvent: (ev) => {
      const uid = ev.object.metadata.uid;
      if (shown.has(uid)) shown.set(uid, ev.type === "DELETED" ? { ...ev.object, deleted: true } : ev.object);
      else if (ev.type === "ADDED") added += 1;
      else return;
      render();
    },
  });
}
