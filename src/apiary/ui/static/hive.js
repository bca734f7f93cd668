// Hive: the pattern drawn from the spec, its stages with desired and ready drones (and a scale
// control), every drone with phase and reason, a form to run a session, and recent sessions.
import { get, listPage, listPath, objectPath, post, put, watch } from "./api.js";
import { act, age, badge, coalesce, h, hash, phaseBadge, preview, section, table } from "./dom.js";
import { droneCounts, droneStage, isReady, live, patternOf, stagesOf } from "./stages.js";

const SESSION_PAGES = 5; // at most 5 × 200 sessions of the cell are read for "recent sessions"

export async function hivePage(ctx, cell, name) {
  const { main, signal } = ctx;
  const writer = ctx.canWrite(cell);
  let hive = await get(objectPath("hives", cell, name), { signal });
  const drones = new Map();
  const sessions = new Map();

  const graph = h("div", { class: "graph", id: "graph" });
  const stagesBox = stagesView(cell, name, writer);
  const dronesBox = h("div");
  const sessionsBox = h("div");
  const conditions = h("p", { class: "note" });
  main.append(
    h("h1", {}, `Hive ${name}`),
    h(
      "p",
      { class: "links" },
      `cell ${cell} · pattern ${patternOf(hive)} · `,
      h("a", { href: hash("dlq", cell, name) }, "Dead letters & approvals"),
      " · ",
      h("a", { href: hash("logs", cell, "hive", name) }, "Logs"),
      " · ",
      h("a", { href: hash("sessions", cell) }, `Sessions of cell ${cell}`),
    ),
    conditions,
    section("Pattern", "graph-title", graph),
    section("Stages", "stages-title", stagesBox.el),
    writer ? runForm(cell, name) : null,
    section("Drones", "drones-title", dronesBox),
    section("Recent sessions", "sessions-title", sessionsBox),
  );

  const render = coalesce(() => {
    const counts = droneCounts(drones.values());
    const conds = (hive.status || {}).conditions || [];
    conditions.textContent = conds.map((c) => `${c.type}=${c.status}${c.message ? ` (${c.message})` : ""}`).join(" · ");
    graph.replaceChildren(drawPattern(hive));
    stagesBox.update(hive, counts);
    dronesBox.replaceChildren(dronesTable([...drones.values()].filter(live), cell));
    sessionsBox.replaceChildren(sessionsTable([...sessions.values()], cell));
  });

  const page = await listPage(listPath("sessions", cell), { limit: 200, signal });
  let sessionRv = page.rv;
  let items = page.items;
  for (let i = 1; page.next && i < SESSION_PAGES; i++) {
    const more = await listPage(listPath("sessions", cell), { limit: 200, cont: page.next, signal });
    items = items.concat(more.items);
    page.next = more.next;
  }
  for (const s of items) if ((s.spec || {}).hiveRef === name) sessions.set(s.metadata.uid, s);
  render();
  main.dataset.ready = "true";

  watch(listPath("hives", cell), {
    field: `metadata.name=${name}`,
    signal,
    onEvent: (ev) => {
      if (ev.type !== "DELETED") hive = ev.object;
      render();
    },
  });
  watch(listPath("drones", cell), {
    selector: `apiary.io/hive=${name}`,
    signal,
    onReset: () => drones.clear(),
    onEvent: (ev) => {
      if (ev.type === "DELETED") drones.delete(ev.object.metadata.uid);
      else drones.set(ev.object.metadata.uid, ev.object);
      render();
    },
  });
  watch(listPath("sessions", cell), {
    rv: sessionRv,
    signal,
    onEvent: (ev) => {
      if ((ev.object.spec || {}).hiveRef !== name) return;
      if (ev.type === "DELETED") sessions.delete(ev.object.metadata.uid);
      else sessions.set(ev.object.metadata.uid, ev.object);
      render();
    },
  });
}

function box(stage, extra = "") {
  return h("div", { class: `stage ${extra}`, role: "listitem" }, h("strong", {}, stage.name), h("small", {}, stage.agentRef || ""), stage.approval === "required" ? badge("approval", "warn") : null);
}

const arrow = () => h("span", { class: "arrow", "aria-hidden": "true" }, "→");

/** The pattern as boxes and arrows: the order and fan-out a message takes. */
export function drawPattern(hive) {
  const spec = hive.spec || {};
  const pattern = patternOf(hive);
  if (pattern === "composed") {
    const parts = [];
    (spec.patternSegments || []).forEach((seg, i) => {
      const config = seg.config || {};
      const swarm = { aggregation: config.aggregation, rounds: config.rounds };
      const inner = { spec: { pattern: seg.pattern, stages: stagesOf({ spec: { patternSegments: [seg] } }), swarm } };
      if (i) parts.push(h("span", { class: "arrow topic" }, `→ ${seg.inputTopic || ""} →`));
      parts.push(h("div", { class: "segment" }, h("div", { class: "seg-title" }, `${seg.name || `segment${i}`} (${seg.pattern})`), drawPattern(inner)));
    });
    return h("div", { class: "flow", role: "list", "aria-label": "composed segments" }, parts);
  }
  const stages = spec.stages || [];
  if (pattern === "pipeline") {
    const parts = [h("span", { class: "io" }, "input")];
    for (const s of stages) parts.push(arrow(), box(s));
    parts.push(arrow(), h("span", { class: "io" }, "output"));
    return h("div", { class: "flow", role: "list", "aria-label": "pipeline stages in order" }, parts);
  }
  if (pattern === "hierarchical") {
    const sup = stages.find((s) => s.role === "supervisor") || stages[0];
    const workers = stages.filter((s) => s !== sup);
    return h(
      "div",
      { class: "tree", "aria-label": "supervisor and workers" },
      h("div", { class: "flow", role: "list" }, h("span", { class: "io" }, "input"), arrow(), sup ? box(sup, "supervisor") : null, arrow(), h("span", { class: "io" }, "output")),
      h("div", { class: "fan", role: "list", "aria-label": "workers" }, workers.map((w) => box(w))),
    );
  }
  if (pattern === "swarm") {
    const agg = (spec.swarm || {}).aggregation || "all";
    const rounds = (spec.swarm || {}).rounds || 1;
    return h(
      "div",
      { class: "flow" },
      h("span", { class: "io" }, "input"),
      arrow(),
      h("div", { class: "fan", role: "list", "aria-label": "every stage gets the input" }, stages.map((s) => box(s))),
      arrow(),
      h("span", { class: "io" }, `${agg}${rounds > 1 ? ` × ${rounds} rounds` : ""}`),
    );
  }
  if (pattern === "event-driven") {
    return h(
      "div",
      { class: "flow" },
      h("span", { class: "io" }, "events"),
      arrow(),
      h(
        "div",
        { class: "fan", role: "list", "aria-label": "subscribers" },
        stages.map((s) => {
          const f = s.filter ? preview(s.filter, 60) : "all events";
          return h("div", { class: "stage", role: "listitem" }, h("strong", {}, s.name), h("small", {}, `filter: ${f}`));
        }),
      ),
    );
  }
  return h("div", { class: "flow", role: "list" }, stages.map((s) => box(s)));
}

/**
 * The stages table, updated in place: a re-render (every drone change) must not take away a
 * replicas field the user is typing in, nor its focus.
 */
function stagesView(cell, name, writer) {
  const body = h("tbody");
  const headers = ["Stage", "AgentSpec", "Desired", "Ready/total"];
  if (writer) headers.push("Scale");
  const el = table("Stages and their drones", headers, [], { id: "stages" });
  el.replaceChild(body, el.querySelector("tbody"));
  let shape = "";
  const cells = new Map();
  const update = (hive, counts) => {
    const stages = stagesOf(hive);
    const now = stages.map((s) => `${s.name}:${s.agentRef}`).join(",");
    if (now !== shape) {
      shape = now;
      cells.clear();
      body.replaceChildren(...stages.map((st) => stageRow(st, cell, name, writer, cells)));
    }
    for (const st of stages) {
      const c = counts.get(`${cell}/${name}/${st.name}`) || { ready: 0, total: 0 };
      const [desired, ready] = cells.get(st.name);
      desired.textContent = String(st.replicas);
      ready.textContent = `${c.ready}/${c.total}`;
    }
  };
  return { el, update };
}

function stageRow(st, cell, name, writer, cells) {
  const desired = h("td", { class: "num" });
  const ready = h("td", { class: "num" });
  cells.set(st.name, [desired, ready]);
  let control = null;
  if (writer) {
    const id = `replicas-${st.name}`;
    const input = h("input", { id, type: "number", min: 0, value: String(st.replicas), class: "replicas" });
    const button = h("button", { type: "button" }, "Scale");
    button.addEventListener("click", () =>
      act(
        button,
        () => put(`${objectPath("hives", cell, name)}/scale`, { replicas: Number(input.value), stage: st.name }),
        `stage ${st.name} scaled to ${input.value}`,
      ),
    );
    control = h("td", {}, h("label", { for: id, class: "sr-only" }, `Replicas for stage ${st.name}`), input, " ", button);
  }
  return h("tr", { dataset: { stage: st.name } }, h("th", { scope: "row" }, st.name), h("td", {}, st.agentRef || ""), desired, ready, control);
}

function dronesTable(drones, cell) {
  drones.sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
  const rows = drones.map((d) => {
    const st = d.status || {};
    const reason = [st.reason, st.message].filter(Boolean).join(": ");
    return h(
      "tr",
      { dataset: { drone: d.metadata.name } },
      h("th", { scope: "row" }, d.metadata.name),
      h("td", {}, droneStage(d) || ""),
      h("td", {}, phaseBadge(st.phase), isReady(d) ? " " : null, isReady(d) ? badge("ready", "good") : null),
      h("td", {}, reason),
      h("td", { class: "num" }, String(st.restartCount || 0)),
      h("td", {}, st.nodeName || (d.spec || {}).nodeName || ""),
      h("td", {}, age(d.metadata.creationTimestamp)),
      h("td", {}, h("a", { href: hash("logs", cell, "drone", d.metadata.name), "aria-label": `logs of ${d.metadata.name}` }, "logs")),
    );
  });
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 8 }, "No drones.")));
  return table(`${drones.length} drones`, ["Drone", "Stage", "Phase", "Reason", "Restarts", "Node", "Age", "Logs"], rows, { id: "drones" });
}

function sessionsTable(sessions, cell) {
  sessions.sort((a, b) => (b.metadata.creationTimestamp || "").localeCompare(a.metadata.creationTimestamp || ""));
  const rows = sessions.slice(0, 50).map((s) => {
    const st = s.status || {};
    return h(
      "tr",
      {},
      h("th", { scope: "row" }, h("a", { href: hash("session", cell, s.metadata.name) }, s.metadata.name)),
      h("td", {}, phaseBadge(st.phase), st.reason && st.reason !== st.phase ? ` ${st.reason}` : ""),
      h("td", { class: "num" }, String(st.messageCount ?? "")),
      h("td", {}, age(s.metadata.creationTimestamp)),
    );
  });
  const caption = `Newest ${rows.length} of ${sessions.length} sessions seen`;
  if (!rows.length) rows.push(h("tr", {}, h("td", { colspan: 4 }, "No sessions seen.")));
  return table(caption, ["Session", "Phase", "Messages", "Age"], rows, { id: "sessions" });
}

function runForm(cell, name) {
  const input = h("textarea", { id: "run-input", rows: 2, required: true });
  const button = h("button", { type: "submit" }, "Run session");
  const form = h("form", { class: "run", "aria-labelledby": "run-title" }, h("h2", { id: "run-title" }, "Run a session"), h("label", { for: "run-input" }, "Input (text, or JSON)"), input, button);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    let payload = input.value;
    try {
      payload = JSON.parse(input.value);
    } catch {
      /* plain text */
    }
    const created = await act(button, () =>
      post(listPath("sessions", cell), { metadata: { generateName: `${name}-` }, spec: { hiveRef: name, input: payload } }),
    );
    if (created) location.hash = hash("session", cell, created.metadata.name);
  });
  return form;
}
