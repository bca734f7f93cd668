"""``apiaryctl top drones|hives``: what drones use (CPU, memory) and handle (messages, latency).

The numbers are the node agents' last report in each ``Drone.status.usage`` (written every ~5 s
when something changed; see node/usage.py), so ``top`` costs two list calls and no node access.
A hive's row sums its drones; its latencies are the worst (max) of its drones' p50 and p99, since
percentiles cannot be summed. Drones that have not reported yet show ``-`` and sort last.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from apiary.ctl import output, tables
from apiary.ctl.commands.get import list_all
from apiary.ctl.context import Ctl, get_ctl
from apiary.resources import lookup_kind

Obj = dict[str, Any]

COUNTERS = ("cpuMillicores", "memoryBytes", "messages", "failed", "inFlight")
"""Usage fields a hive sums over its drones."""

LATENCIES = ("latencyP50Ms", "latencyP99Ms")
"""Usage fields a hive takes the maximum of."""

top_app = typer.Typer(
    help="Resource use and traffic of drones, or of hives summed over their drones.",
    no_args_is_help=True,
)

Selector = Annotated[
    str | None, typer.Option("-l", "--selector", help="Label selector, e.g. app=echo,tier!=x")
]
AllCells = Annotated[
    bool, typer.Option("-A", "--all-cells", "--all-namespaces", help="Across all cells.")
]


# ------------------------------------------------------------------------------ formatting


def fmt_memory(value: Any) -> str:
    """Bytes as kubectl top does: ``512``, ``40Ki``, ``12Mi``, ``2Gi``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    n = float(value)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if n < 1024 or unit == "Ti":
            return f"{round(n)}{unit}"
        n /= 1024
    return "-"  # unreachable: the loop returns at "Ti"


def fmt_latency(value: Any) -> str:
    """Milliseconds as ``0.5ms``, ``25ms``, ``2.5s``."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    if value >= 1000:
        return f"{value / 1000:g}s"
    return f"{value:g}ms"


def fmt_number(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return str(round(value))


# ---------------------------------------------------------------------------------- rows


def drone_row(drone: Obj) -> Obj:
    """The data of one drone's ``top`` line (what ``-o json`` prints)."""
    meta = drone.get("metadata") or {}
    spec = drone.get("spec") or {}
    status = drone.get("status") or {}
    usage = status.get("usage") if isinstance(status.get("usage"), dict) else None
    row: Obj = {
        "cell": meta.get("namespace") or "default",
        "name": meta.get("name"),
        "hive": spec.get("hive"),
        "stage": spec.get("stage"),
        "node": status.get("nodeName") or spec.get("nodeName"),
        "phase": status.get("phase"),
    }
    for key in (*COUNTERS, *LATENCIES, "updatedTime"):
        row[key] = usage.get(key) if usage is not None else None
    return row


def hive_rows(hives: list[Obj], drones: list[Obj]) -> list[Obj]:
    """One row per hive: counters summed over its drones, latencies their maximum."""
    rows: dict[tuple[str, str], Obj] = {}
    for h in hives:
        meta = h.get("metadata") or {}
        key = (meta.get("namespace") or "default", str(meta.get("name")))
        rows[key] = {"cell": key[0], "name": key[1], "drones": 0, "reporting": 0}
        rows[key].update({k: None for k in (*COUNTERS, *LATENCIES)})
    for d in drones:
        r = drone_row(d)
        row = rows.get((r["cell"], str(r["hive"])))
        if row is None:
            continue  # standalone drone, or its hive is not in the (selected) list
        row["drones"] += 1
        if r["updatedTime"] is None and r["messages"] is None:
            continue
        row["reporting"] += 1
        for k in COUNTERS:
            if isinstance(r[k], int | float):
                row[k] = (row[k] or 0) + r[k]
        for k in LATENCIES:
            if isinstance(r[k], int | float):
                row[k] = r[k] if row[k] is None else max(row[k], r[k])
    return list(rows.values())


def by_cpu(rows: list[Obj]) -> list[Obj]:
    """Busiest first; rows without a report last; then by cell and name."""

    def key(r: Obj) -> tuple[int, float, str, str]:
        cpu = r.get("cpuMillicores")
        if isinstance(cpu, int | float):
            return (0, -float(cpu), str(r["cell"]), str(r["name"]))
        return (1, 0.0, str(r["cell"]), str(r["name"]))

    return sorted(rows, key=key)


Cell = Callable[[Obj], str]

USAGE_COLUMNS: list[tuple[str, Cell]] = [
    ("CPU(m)", lambda r: fmt_number(r["cpuMillicores"])),
    ("MEMORY", lambda r: fmt_memory(r["memoryBytes"])),
    ("MSGS", lambda r: fmt_number(r["messages"])),
    ("FAILED", lambda r: fmt_number(r["failed"])),
    ("INFLIGHT", lambda r: fmt_number(r["inFlight"])),
    ("P50", lambda r: fmt_latency(r["latencyP50Ms"])),
    ("P99", lambda r: fmt_latency(r["latencyP99Ms"])),
]


def _updated(now: datetime) -> Cell:
    return lambda r: tables.age(r.get("updatedTime"), now)


def drone_columns(wide: bool, all_cells: bool, now: datetime) -> list[tuple[str, Cell]]:
    cols: list[tuple[str, Cell]] = [
        ("NAME", lambda r: tables.text(r["name"])),
        ("HIVE", lambda r: tables.text(r["hive"])),
        ("STAGE", lambda r: tables.text(r["stage"])),
        *USAGE_COLUMNS,
    ]
    if wide:
        cols += [("NODE", lambda r: tables.text(r["node"])), ("UPDATED", _updated(now))]
    return [("CELL", lambda r: tables.text(r["cell"])), *cols] if all_cells else cols


def hive_columns(wide: bool, all_cells: bool) -> list[tuple[str, Cell]]:
    cols: list[tuple[str, Cell]] = [
        ("NAME", lambda r: tables.text(r["name"])),
        ("DRONES", lambda r: str(r["drones"])),
        *USAGE_COLUMNS,
    ]
    if wide:
        cols.append(("REPORTING", lambda r: str(r["reporting"])))
    return [("CELL", lambda r: tables.text(r["cell"])), *cols] if all_cells else cols


# -------------------------------------------------------------------------------- output


def show(ctl: Ctl, kind: str, rows: list[Obj], cols: list[tuple[str, Cell]], where: str) -> None:
    fmt = ctl.output
    if fmt in ("json", "yaml"):
        doc = {"kind": f"{kind}UsageList", "items": rows}
        output.out(output.dump_json(doc) if fmt == "json" else output.dump_yaml(doc).rstrip("\n"))
        return
    if not rows:
        output.info(f"No {kind.lower()}s found in {where}.")
        return
    if fmt == "name":
        for r in rows:
            output.out(f"{kind.lower()}/{r['name']}")
        return
    body = [[fn(r) for _, fn in cols] for r in rows]
    for line in tables.render(body, [name for name, _ in cols]):
        output.out(line)


def _where(ctl: Ctl, all_cells: bool) -> str:
    return "any cell" if all_cells else f"cell {ctl.cell!r}"


def _list(ctl: Ctl, kind: str, selector: str | None, all_cells: bool) -> list[Obj]:
    info = lookup_kind(kind)
    assert info is not None  # a registry kind
    return list_all(ctl, info, selector, all_cells, {})[0]


@top_app.command("drones")
def top_drones(selector: Selector = None, all_cells: AllCells = False) -> None:
    """Each drone's CPU, memory, messages handled, failures, in flight and latency, busiest
    first (the node's last report, at most ~5 s old)."""
    ctl = get_ctl()
    rows = by_cpu([drone_row(d) for d in _list(ctl, "Drone", selector, all_cells)])
    cols = drone_columns(ctl.output == "wide", all_cells, datetime.now(UTC))
    show(ctl, "Drone", rows, cols, _where(ctl, all_cells))


@top_app.command("hives")
def top_hives(selector: Selector = None, all_cells: AllCells = False) -> None:
    """Each hive's drones summed (-l selects hives by label); p50/p99 are the slowest drone's."""
    ctl = get_ctl()
    hives = _list(ctl, "Hive", selector, all_cells)
    drones = _list(ctl, "Drone", None, all_cells) if hives else []
    rows = by_cpu(hive_rows(hives, drones))
    show(ctl, "Hive", rows, hive_columns(ctl.output == "wide", all_cells), _where(ctl, all_cells))


def register(app: typer.Typer) -> None:
    app.add_typer(top_app, name="top")
