// A hive's stages as the controllers name them: `spec.stages[]`, or for a composed hive
// `{segment}-{entry name or index}` over each segment's subscribers, stages and agents.
const SEGMENT_KEYS = ["subscribers", "stages", "agents"];

export function stagesOf(hive) {
  const spec = hive.spec || {};
  const out = [];
  for (const s of spec.stages || []) {
    out.push({ ...s, replicas: s.replicas ?? 1, pattern: spec.pattern, segment: null });
  }
  (spec.patternSegments || []).forEach((seg, i) => {
    const segName = seg.name || `segment${i}`;
    const config = seg.config || {};
    for (const key of SEGMENT_KEYS) {
      (config[key] || []).forEach((entry, j) => {
        out.push({ ...entry, name: `${segName}-${entry.name || j}`, replicas: entry.replicas ?? 1, pattern: seg.pattern, segment: segName });
      });
    }
  });
  return out;
}

export function patternOf(hive) {
  const spec = hive.spec || {};
  return spec.pattern || (spec.patternSegments ? "composed" : "");
}

const HIVE = "apiary.io/hive";
const STAGE = "apiary.io/stage";

export const droneHive = (d) => ((d.metadata || {}).labels || {})[HIVE];
export const droneStage = (d) => ((d.metadata || {}).labels || {})[STAGE];
export const isReady = (d) => !!((d.status || {}).ready && (d.status || {}).phase === "Running");
export const live = (d) => !(d.metadata || {}).deletionTimestamp;

/** `{ready, total}` per `cell/hive/stage` over a set of drones. */
export function droneCounts(drones) {
  const counts = new Map();
  for (const d of drones) {
    if (!live(d) || !droneHive(d)) continue;
    const k = `${d.metadata.namespace}/${droneHive(d)}/${droneStage(d)}`;
    const c = counts.get(k) || { ready: 0, total: 0 };
    c.total += 1;
    if (isReady(d)) c.ready += 1;
    counts.set(k, c);
  }
  return counts;
}
