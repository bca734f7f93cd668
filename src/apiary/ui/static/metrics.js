// The live numbers of the overview come from apiaryd's own /metrics (Prometheus text), read by
// the browser with the signed-in token: throughput is the change of a counter between two
// reads, p50/p99 the quantiles of the hop-latency histogram since the server started.
import { get } from "./api.js";

const LINE = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /(\w+)="((?:[^"\\]|\\.)*)"/g;

export function parse(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(LABEL)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return samples;
}

const stageKey = (l) => `${l.cell}/${l.hive}/${l.stage}`;
const hiveKey = (l) => `${l.cell}/${l.hive}`;

/** Per stage: `ok` answers, `errors`, `buckets` of the hop histogram; per hive: dead letters. */
export function summarize(samples) {
  const stages = new Map();
  const hives = new Map();
  const stage = (l) => {
    const k = stageKey(l);
    if (!stages.has(k)) stages.set(k, { ok: 0, errors: 0, buckets: [] });
    return stages.get(k);
  };
  for (const s of samples) {
    const l = s.labels;
    if (s.name === "apiary_stage_messages_total" && l.outcome === "ok") stage(l).ok += s.value;
    else if (s.name === "apiary_stage_errors_total") stage(l).errors += s.value;
    else if (s.name === "apiary_stage_hop_duration_seconds_bucket") stage(l).buckets.push([Number(l.le), s.value]);
    else if (s.name === "apiary_dead_letters_open" && l.phase !== "Resolved") {
      hives.set(hiveKey(l), (hives.get(hiveKey(l)) || 0) + s.value);
    }
  }
  for (const st of stages.values()) st.buckets.sort((a, b) => a[0] - b[0]);
  return { stages, hives, at: performance.now() };
}

/** Prometheus' histogram_quantile over cumulative buckets; null without observations. */
export function quantile(q, buckets) {
  if (!buckets.length) return null;
  const total = buckets[buckets.length - 1][1];
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      const inBucket = count - prevCount;
      return prevLe + (le - prevLe) * (inBucket ? (rank - prevCount) / inBucket : 0);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** How often the overview reads /metrics: 10 s, or `apiary.metricsSeconds` in sessionStorage
 * (at least 1 s) for a tab that wants it sooner. */
export function metricsPeriod() {
  const asked = Number(sessionStorage.getItem("apiary.metricsSeconds"));
  return asked >= 1 ? asked * 1000 : 10000;
}

/** Read /metrics every `period` ms (one request, not one per hive) until `signal` aborts. */
export function follow(signal, onUpdate, period = metricsPeriod()) {
  let last = null;
  const tick = async () => {
    if (signal.aborted) return;
    try {
      const now = summarize(parse(await get("/metrics", { signal })));
      const rates = new Map();
      if (last) {
        const dt = (now.at - last.at) / 1000;
        for (const [k, st] of now.stages) {
          const before = last.stages.get(k);
          rates.set(k, before && dt > 0 ? Math.max(0, st.ok - before.ok) / dt : null);
        }
      }
      last = now;
      onUpdate({ ...now, rates, error: null });
    } catch (e) {
      if (signal.aborted) return;
      onUpdate({ stages: new Map(), hives: new Map(), rates: new Map(), error: e });
      if (e.status === 403) return; // this token may not read metrics: do not ask again
    }
    setTimeout(tick, period);
  };
  tick();
}
