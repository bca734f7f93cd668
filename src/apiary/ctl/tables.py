"""Table columns per kind for ``get`` (``-o wide`` adds more), kubectl style.

Columns read fields defensively: objects written by other components (drones, sessions, nodes)
may lack any status field yet, which shows as ``-``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from apiary.ctl.durations import format_age

Obj = dict[str, Any]
Column = tuple[str, Callable[[Obj, datetime], str]]


def dig(obj: Any, *path: str | int, default: Any = None) -> Any:
    """``obj[p0][p1]…`` or ``default`` when any step is missing or of the wrong type."""
    cur = obj
    for p in path:
        if isinstance(cur, list) and isinstance(p, int) and -len(cur) <= p < len(cur):
            cur = cur[p]
            continue
        if not (isinstance(cur, dict) and isinstance(p, str) and p in cur):
            return default
        cur = cur[p]
    return cur


def text(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def age(value: Any, now: datetime) -> str:
    t = parse_time(value)
    return format_age((now - t).total_seconds()) if t else "-"


def condition(obj: Obj, ctype: str) -> Obj | None:
    for c in dig(obj, "status", "conditions", default=[]) or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def cond_status(obj: Obj, ctype: str) -> str:
    c = condition(obj, ctype)
    return text(c.get("status")) if c else "-"


def labels(obj: Obj) -> str:
    lab = dig(obj, "metadata", "labels", default={}) or {}
    return ",".join(f"{k}={v}" for k, v in lab.items()) if isinstance(lab, dict) else "-"


def _name(o: Obj, _: datetime) -> str:
    return text(dig(o, "metadata", "name"))


def _age(o: Obj, now: datetime) -> str:
    return age(dig(o, "metadata", "creationTimestamp"), now)


def _phase(o: Obj, _: datetime) -> str:
    return text(dig(o, "status", "phase"))


def _field(*path: str | int) -> Callable[[Obj, datetime], str]:
    return lambda o, _now: text(dig(o, *path))


def _hive_pattern(o: Obj, _: datetime) -> str:
    if dig(o, "spec", "patternSegments"):
        segs = dig(o, "spec", "patternSegments", default=[])
        return "composed(" + ",".join(text(dig(s, "pattern")) for s in segs) + ")"
    return text(dig(o, "spec", "pattern"))


def _hive_stages(o: Obj, _: datetime) -> str:
    segs = dig(o, "spec", "patternSegments", default=None)
    if isinstance(segs, list):
        return str(len(segs))
    stages = dig(o, "spec", "stages", default=[])
    return str(len(stages)) if isinstance(stages, list) else "-"


def _hive_agents(o: Obj, _: datetime) -> str:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("agentRef")
            if isinstance(ref, str) and ref not in refs:
                refs.append(ref)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(o.get("spec"))
    return ",".join(refs) or "-"


def _hive_ready(o: Obj, _: datetime) -> str:
    ready, want = dig(o, "status", "readyReplicas"), dig(o, "status", "replicas")
    if ready is None and want is None:
        return "-"
    return f"{text(ready if ready is not None else 0)}/{text(want)}"


def _scaling(o: Obj, _: datetime) -> str:
    lo, hi = dig(o, "spec", "scaling", "minReplicas"), dig(o, "spec", "scaling", "maxReplicas")
    return "-" if lo is None and hi is None else f"{text(lo)}-{text(hi)}"


def _command(o: Obj, _: datetime) -> str:
    cmd = dig(o, "spec", "runtime", "command", default=[])
    joined = " ".join(str(c) for c in cmd) if isinstance(cmd, list) else text(cmd)
    return joined[:40] + ("…" if len(joined) > 40 else "") if joined else "-"


def _secret_keys(o: Obj, _: datetime) -> str:
    data = o.get("data") or {}
    return str(len(data)) if isinstance(data, dict) else "-"


def _secret_key_names(o: Obj, _: datetime) -> str:
    data = o.get("data") or {}
    return ",".join(data) if isinstance(data, dict) and data else "-"


def _owner(o: Obj, _: datetime) -> str:
    owners = dig(o, "metadata", "ownerReferences", default=[]) or []
    return ",".join(f"{r.get('kind', '?').lower()}/{r.get('name', '?')}" for r in owners) or "-"


def _involved(o: Obj, _: datetime) -> str:
    inv = o.get("involvedObject") or {}
    return f"{str(inv.get('kind', '?')).lower()}/{inv.get('name', '?')}"


def _last_seen(o: Obj, now: datetime) -> str:
    return age(o.get("lastTimestamp") or dig(o, "metadata", "creationTimestamp"), now)


def _drone_status(o: Obj, _: datetime) -> str:
    """kubectl's STATUS: why a drone that is not running is not (``CrashLoopBackOff``,
    ``ExecFailed``, ``QuotaExceeded``, ``Unschedulable`` …), else its phase — ``Warm`` for a
    Running drone of a warm pool (started, taking no traffic until claimed)."""
    phase, reason = dig(o, "status", "phase"), dig(o, "status", "reason")
    if reason and phase in ("Failed", "Pending", None):
        return str(reason)
    if phase == "Running" and dig(o, "spec", "warm") is True:
        return "Warm"
    return text(phase)


def _agentspec_replicas(o: Obj, _: datetime) -> str:
    """``ready/wanted`` of an AgentSpec's standalone drones (``spec.replicas``, as ``scale
    agentspec`` sets it); ``-`` when it runs only inside hives."""
    want = dig(o, "spec", "replicas")
    if want is None:
        return "-"
    ready = dig(o, "status", "readyReplicas")
    return f"{ready if isinstance(ready, int) else 0}/{want}"


def _node_ready(o: Obj, _: datetime) -> str:
    s = cond_status(o, "Ready")
    return {"True": "Ready", "False": "NotReady"}.get(s, "Unknown")


def _quota(key: str) -> Callable[[Obj, datetime], str]:
    return _field("spec", "resourceQuota", key)


NAME: Column = ("NAME", _name)
AGE: Column = ("AGE", _age)

COLUMNS: dict[str, tuple[list[Column], list[Column]]] = {
    # kind: (default columns, extra columns for -o wide)
    "Cell": (
        [NAME, ("STATUS", _phase), AGE],
        [
            ("MAX-AGENTSPECS", _quota("maxAgentSpecs")),
            ("MAX-HIVES", _quota("maxHives")),
            ("MAX-CPU", _quota("maxCPU")),
            ("MAX-MEMORY-GB", _quota("maxMemoryGB")),
        ],
    ),
    "Secret": ([NAME, ("KEYS", _secret_keys), AGE], [("KEY-NAMES", _secret_key_names)]),
    "AgentSpec": (
        [
            NAME,
            ("INTERFACE", _field("spec", "interface", "type")),
            ("TIER", _field("spec", "taskTier")),
            ("REPLICAS", _agentspec_replicas),
            ("SCALING", _scaling),
            ("REFS", lambda o, _n: cond_status(o, "ResolvedRefs")),
            AGE,
        ],
        [("COMMAND", _command), ("LABELS", lambda o, _n: text(labels(o)))],
    ),
    "Hive": (
        [
            NAME,
            ("PATTERN", _hive_pattern),
            ("STAGES", _hive_stages),
            ("READY", _hive_ready),
            ("REFS", lambda o, _n: cond_status(o, "ResolvedRefs")),
            AGE,
        ],
        [
            ("POOL", _field("spec", "poolMode")),
            ("AGENTS", _hive_agents),
            ("PHASE", _phase),
            ("LABELS", lambda o, _n: text(labels(o))),
        ],
    ),
    "Drone": (
        [
            NAME,
            ("STATUS", _drone_status),
            ("READY", _field("status", "ready")),
            ("RESTARTS", _field("status", "restartCount")),
            ("NODE", _field("status", "nodeName")),
            AGE,
        ],
        [
            ("PID", _field("status", "pid")),
            ("OWNER", _owner),
            ("AGENT", _field("spec", "agentSpec")),
        ],
    ),
    "Session": (
        [NAME, ("HIVE", _field("spec", "hiveRef")), ("PHASE", _phase), AGE],
        [
            ("PROMPT-TOKENS", _field("status", "usage", "promptTokens")),
            ("COMPLETION-TOKENS", _field("status", "usage", "completionTokens")),
        ],
    ),
    "Node": (
        [NAME, ("STATUS", _node_ready), AGE],
        [
            ("CPU", _field("status", "capacity", "cpu")),
            ("MEMORY", _field("status", "capacity", "memory")),
        ],
    ),
    "Event": (
        [
            ("LAST SEEN", _last_seen),
            ("TYPE", _field("type")),
            ("REASON", _field("reason")),
            ("OBJECT", _involved),
            ("COUNT", _field("count")),
            ("MESSAGE", _field("message")),
        ],
        [
            ("FIRST SEEN", lambda o, now: age(o.get("firstTimestamp"), now)),
            ("SOURCE", _field("source", "component")),
        ],
    ),
}


_NUMBER = re.compile(r"(?<![\w.-])\d+(?:\.\d+)?(?:ms|s|m|h|d|Ki|Mi|Gi|%)?(?![\w.-])")
"""A number standing alone in an Event's message (``8s``, ``restarts 3``, ``(200 in use``), not
one inside a name (``h-0``, ``a8afb5a0``)."""


def merge_events(items: list[Obj]) -> list[Obj]:
    """Events that differ only in the numbers of their message (a back-off's ``restarting in
    8s``, ``16s``; a quota's ``200 in use``) as one row, oldest first: the counts added, the
    first and last times widened, the newest message shown. For display only."""
    merged: dict[tuple[str, ...], Obj] = {}

    def when(e: Obj, key: str) -> str:
        return str(
            e.get(key) or e.get("firstTimestamp") or dig(e, "metadata", "creationTimestamp") or ""
        )

    for e in sorted(items, key=lambda e: when(e, "lastTimestamp")):
        inv = e.get("involvedObject") or {}
        key = (
            str(dig(e, "metadata", "namespace") or ""),
            str(inv.get("kind") or ""),
            str(inv.get("name") or ""),
            str(e.get("type") or ""),
            str(e.get("reason") or ""),
            _NUMBER.sub("#", str(e.get("message") or "")),
        )
        seen = merged.get(key)
        if seen is None:
            merged[key] = dict(e)
            continue
        count = int(seen.get("count") or 1) + int(e.get("count") or 1)
        first = min(when(seen, "firstTimestamp"), when(e, "firstTimestamp"))
        merged[key] = {**e, "count": count, "firstTimestamp": first}
    return sorted(merged.values(), key=lambda e: when(e, "lastTimestamp"))


def columns_for(kind: str, wide: bool, all_cells: bool) -> list[Column]:
    base, extra = COLUMNS.get(kind, ([NAME, ("PHASE", _phase), AGE], []))
    cols = list(base) + (list(extra) if wide else [])
    if all_cells:
        cols.insert(0, ("CELL", _field("metadata", "namespace")))
    return cols


def render(rows: list[list[str]], header: list[str] | None) -> list[str]:
    """Left-aligned columns separated by three spaces; the last column is not padded."""
    table = ([header] if header else []) + rows
    if not table:
        return []
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return [
        "   ".join(cell.ljust(widths[i]) if i < len(r) - 1 else cell for i, cell in enumerate(r))
        for r in table
    ]


def table_rows(
    items: list[Obj], cols: list[Column], now: datetime | None = None
) -> list[list[str]]:
    t = now or datetime.now(UTC)
    return [[fn(o, t) for _, fn in cols] for o in items]
