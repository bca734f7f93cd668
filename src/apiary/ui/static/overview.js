// Overview: cells, nodes and their capacity, and the hives one page at a time (the list API's
// limit/continue) with ready/total drones per stage, throughput, p50/p99, errors and dead
// letters per stage. Drones, hives and nodes stay current through watches; the numbers from
// /metrics are read once every 10 s (one request for the whole page).
import { listAll, listPage, listPath, watch } from "./api.js";
import { age, badge, coalesce, h, hash, ms, section, table } from "./dom.js";
import { follow, metricsPeriod, quantile } from "./metrics.js";
import { continueOf, pagerLinks, rememberNext } from "./pager.js";
import { droneCounts, patternOf, stagesOf } from "./stages.js";

const PAGE = 100;
const PAGES_KEY = "apiary.overviewPages";

export async function overview(ctx, pageArg) {
  const started = performance.now();
  const { main, who, signal } = ctx;
  const admin = who.role === "cluster-admin";
  const scope = admin ? null : who.cell;
  const pageNo = Number(pageArg || 0);
  const cont = continueOf(PAGES_KEY, pageNo);

  const hivesBody = h("tbody");
  const nodesBox = h("div");
  const cellsBox = h("div");
  const metricsNote = h("p", { class: "note", id: "metrics-note" }, "Reading /metrics…");
  const pager = h("nav", { class: "pager", "aria-label": "Hive pages" });
  main.append(
    h("h1", {}, "Overview"),
    section("Cells", "cells-title", cellsBox),
    section("Nodes", "nodes-title", nodesBox),
    section(
      "Hives",
      "hives-title",
      metricsNote,
      h(
        "table",
        { id: "hives" },
        h("caption", {}, `Hives${scope ? ` in cell ${scope}` : " in every cell"}, ${PAGE} per page`),
        h(
          "thead",
          {},
          h("tr", {}, ["Cell", "Hive", "Pattern", "Stage", "Drones ready/total", "Answers/s", "p50", "p99", "Errors", "Dead letters"].map((t) => h("th", { scope: "col" }, t))),
        ),
        hivesBody,
      ),
      pager,
    ),
  );

  let hives = [];
  const drones = new Map();
  let metrics = { stages: new Map(), hives: new Map(), rates: new Map(), error: null };

  const renderHives = () => {
    const counts = droneCounts(drones.values());
    const rows = [];
    for (const hv of hives) {
      const cell = hv.metadata.namespace;
      const name = hv.metadata.name;
      const stages = stagesOf(hv);
      const dl = metrics.hives.get(`${cell}/${name}`) || 0;
      (stages.length ? stages : [{ name: "—" }]).forEach((st, i) => {
        const key = `${cell}/${name}/${st.name}`;
        const c = counts.get(key) || { ready: 0, total: 0 };
        const m = metrics.stages.get(key);
        const rate = metrics.rates.get(key);
        const first = i === 0;
        rows.push(
          h(
            "tr",
            { dataset: { hive: `${cell}/${name}`, stage: st.name } },
            first ? h("td", { rowspan: stages.length || 1 }, cell) : null,
            first ? h("th", { scope: "row", rowspan: stages.length || 1 }, h("a", { href: hash("hive", cell, name) }, name)) : null,
            first ? h("td", { rowspan: stages.length || 1 }, patternOf(hv)) : null,
            h("td", {}, st.name),
            h("td", { class: c.ready < (st.replicas ?? c.total) ? "warn num" : "num" }, `${c.ready}/${c.total}`),
            h("td", { class: "num" }, rate === undefined || rate === null ? "—" : rate.toFixed(1)),
            h("td", { class: "num" }, m ? ms(quantile(0.5, m.buckets)) : "—"),
            h("td", { class: "num" }, m ? ms(quantile(0.99, m.buckets)) : "—"),
            h("td", { class: "num" }, m ? String(m.errors) : "—"),
            first
              ? h("td", { rowspan: stages.length || 1, class: "num" }, dl ? h("a", { href: hash("dlq", cell, name) }, badge(String(dl), "bad")) : "0")
              : null,
          ),
        );
      });
    }
    if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 10 }, "No hives.")));
    hivesBody.replaceChildren(...rows);
  };
  let renderNodes = () => {};
  const rerender = coalesce(() => {
    renderHives();
    renderNodes();
  });

  const loadPage = async () => {
    const page = await listPage(listPath("hives", scope), { limit: PAGE, cont, signal });
    hives = page.items;
    rememberNext(PAGES_KEY, pageNo, page.next);
    pager.replaceChildren(...pagerLinks("#/overview", pageNo, PAGE, hives.length, page.next, "hives"));
    renderHives();
    return page.rv;
  };

  const [rv] = await Promise.all([loadPage(), admin ? renderCells(cellsBox, signal) : ownCell(cellsBox, who)]);
  main.dataset.ready = "true";
  main.dataset.loadMs = String(Math.round(performance.now() - started));

  // Live: the shown hives' changes, every drone, every node; a hive added or removed re-reads
  // this page (once per burst).
  let relist = null;
  watch(listPath("hives", scope), {
    rv,
    signal,
    onEvent: (ev) => {
      const i = hives.findIndex((x) => x.metadata.uid === ev.object.metadata.uid);
      if (ev.type === "MODIFIED" && i >= 0) {
        hives[i] = ev.object;
        rerender();
      } else if (ev.type !== "MODIFIED") {
        clearTimeout(relist);
        relist = setTimeout(() => loadPage().catch(() => {}), 500);
      }
    },
  });
  watch(listPath("drones", scope), {
    signal,
    onReset: () => drones.clear(),
    onEvent: (ev) => {
      if (ev.type === "DELETED") drones.delete(ev.object.metadata.uid);
      else drones.set(ev.object.metadata.uid, ev.object);
      rerender();
    },
  });
  if (admin) renderNodes = watchNodes(nodesBox, signal, drones);
  else nodesBox.append(h("p", { class: "note" }, "Nodes are cluster-scoped: a cluster-admin token shows them."));
  const period = metricsPeriod();
  follow(signal, (m) => {
    metrics = m;
    metricsNote.textContent = m.error
      ? `Throughput and latency need the metrics-reader right (${m.error.message}).`
      : m.rates.size
        ? `Answers/s over the last ${period / 1000} s; p50/p99 of hop latency since the server started; errors = failed attempts.`
        : `p50/p99 of hop latency since the server started; answers/s after the next reading (${period / 1000} s).`;
    rerender();
  });
}

async function renderCells(box, signal) {
  const { items } = await listAll("/api/v1/cells", { signal });
  const rows = items.map((c) => {
    const q = (c.spec || {}).resourceQuota || {};
    const quota = Object.entries(q).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
    const name = c.metadata.name;
    return h("tr", {}, h("th", { scope: "row" }, name), h("td", {}, quota), h("td", {}, h("a", { href: hash("sessions", name) }, `sessions of ${name}`)), h("td", {}, age(c.metadata.creationTimestamp)));
  });
  box.replaceChildren(table(`${items.length} cells`, ["Cell", "Quota", "Sessions", "Age"], rows, { id: "cells" }));
}

function ownCell(box, who) {
  box.replaceChildren(h("p", {}, `This token works in cell ${who.cell}: `, h("a", { href: hash("sessions", who.cell) }, `its sessions`), "."));
}

function watchNodes(box, signal, drones) {
  const nodes = new Map();
  const render = coalesce(() => {
    const placed = new Map();
    for (const d of drones.values()) {
      const node = (d.status || {}).nodeName;
      if (node && (d.status || {}).phase === "Running") placed.set(node, (placed.get(node) || 0) + 1);
    }
    const rows = [...nodes.values()]
      .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name))
      .map((n) => {
        const st = n.status || {};
        const ready = (st.conditions || []).find((c) => c.type === "Ready");
        const cap = st.capacity || (n.spec || {}).capacity || {};
        const alloc = st.allocatable || {};
        return h(
          "tr",
          {},
          h("th", { scope: "row" }, n.metadata.name),
          h("td", {}, ready ? badge(ready.status === "True" ? "Ready" : `NotReady (${ready.reason || ""})`, ready.status === "True" ? "good" : "bad") : badge("Unknown", "warn")),
          h("td", { class: "num" }, cap.cpu !== undefined ? `${cap.cpu}m` : "—"),
          h("td", { class: "num" }, cap.memory !== undefined ? `${(cap.memory / 2 ** 30).toFixed(1)} GiB` : "—"),
          h("td", { class: "num" }, alloc.cpu !== undefined ? `${alloc.cpu}m / ${(alloc.memory / 2 ** 30).toFixed(1)} GiB` : "—"),
          h("td", { class: "num" }, String(placed.get(n.metadata.name) || 0)),
        );
      });
    box.replaceChildren(table(`${nodes.size} nodes`, ["Node", "Ready", "CPU", "Memory", "Allocatable", "Running drones"], rows, { id: "nodes" }));
  });
  render();
  watch("/api/v1/nodes", {
    signal,
    onReset: () => nodes.clear(),
    onEvent: (ev) => {
      if (ev.type === "DELETED") nodes.delete(ev.object.metadata.uid);
      else nodes.set(ev.object.metadata.uid, ev.object);
      render();
    },
  });
  return render;
}
