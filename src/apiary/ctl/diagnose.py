"""Why a hive is not answering yet, in one line, from what the server already reports.

``run`` shows this in its spinner and in its timeout error, so a crashing agent, a drone held by
a quota, an unresolved ``agentRef`` or an approval gate is named instead of a bare
``timed out``. Everything comes from the objects: the Session's phase (``WaitingForApproval``
and ``pendingApproval``), the Hive's conditions (``ResolvedRefs``, ``Ready``) and per-stage
counts (``status.stages``), and the drones' ``phase``, ``reason`` and ``message``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from apiary import errors
from apiary.client import DEFAULT_CELL, ApiClient
from apiary.ctl import tables

Obj = dict[str, Any]

LABEL_HIVE = "apiary.io/hive"
LABEL_STAGE = "apiary.io/stage"
MESSAGE_WIDTH = 160
"""A drone's or condition's message is cut there (the spinner is one line)."""


def _short(text: Any) -> str:
    line = " ".join(str(text or "").split())
    return line if len(line) <= MESSAGE_WIDTH else line[: MESSAGE_WIDTH - 1] + "…"


def _stage_key(name: str) -> str:
    """Stage names as the drones' label spells them (``segment/entry`` → ``segment-entry``)."""
    return name.replace("/", "-")


def _in(cell: str | None) -> str:
    """`` -n CELL`` for a command line outside the default cell."""
    return f" -n {cell}" if cell and cell != DEFAULT_CELL else ""


def approval_reason(session: Obj | None) -> str | None:
    status = (session or {}).get("status") or {}
    if status.get("phase") != "WaitingForApproval":
        return None
    name = tables.dig(session, "metadata", "name")
    cell = tables.dig(session, "metadata", "namespace")
    stage = status.get("pendingApproval")
    where = f"stage {stage} " if stage else ""
    return (
        f"{where}waits for approval: apiaryctl approve session/{name}{_in(cell)} "
        f"(or reject session/{name})"
    )


def hive_reason(hive: Obj) -> str | None:
    """A problem of the hive as a whole: references that do not resolve, an invalid spec."""
    refs = tables.condition(hive, "ResolvedRefs")
    if refs is not None and refs.get("status") == "False":
        return f"{refs.get('reason') or 'ResolvedRefs=False'}: {_short(refs.get('message'))}"
    ready = tables.condition(hive, "Ready")
    if (
        ready is not None
        and ready.get("status") == "False"
        and ready.get("reason") == "InvalidSpec"
    ):
        return f"InvalidSpec: {_short(ready.get('message'))}"
    return None


def drone_reasons(drones: Iterable[Obj]) -> str:
    """``Pending: QuotaExceeded cell 'q' quota … ; 2 Failed: CrashLoopBackOff exited with …``:
    the drones that are not ready, grouped by phase and reason (the first message of each)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for d in drones:
        status = d.get("status") or {}
        if status.get("ready") is True:
            continue
        phase = str(status.get("phase") or "Pending")
        reason = str(status.get("reason") or "")
        groups.setdefault((phase, reason), []).append(_short(status.get("message")))
    parts = []
    for (phase, reason), messages in groups.items():
        count = f"{len(messages)} " if len(messages) > 1 else ""
        what = " ".join(p for p in (reason, messages[0]) if p)
        if not what:
            what = "not scheduled yet" if phase == "Pending" else "not ready yet"
        parts.append(f"{count}{phase}: {what}")
    return "; ".join(parts)


def stage_reason(hive: Obj, stage: Obj, drones: list[Obj]) -> str | None:
    """``stage echo: 0/2 drones ready — Pending: QuotaExceeded …`` when no drone of the stage
    can take work; None when one can (the stage is simply working)."""
    name = str(stage.get("name") or "?")
    wanted = int(stage.get("wanted") or 0)
    ready = int(stage.get("ready") or 0)
    if ready > 0:
        return None
    hive_name = tables.dig(hive, "metadata", "name")
    cell = tables.dig(hive, "metadata", "namespace")
    if wanted == 0:
        return (
            f"stage {name}: scaled to 0 replicas "
            f"(apiaryctl scale hive/{hive_name}{_in(cell)} --stage {name} --replicas 1)"
        )
    mine = [d for d in drones if tables.dig(d, "metadata", "labels", LABEL_STAGE) == name]
    why = drone_reasons(mine) or "no drones yet"
    return f"stage {name}: {ready}/{wanted} drones ready — {why}"


def why_waiting(
    client: ApiClient, cell: str, hive_name: str, stage: str | None, session: Obj | None
) -> str | None:
    """What keeps ``hive_name`` (at ``stage``, when known) from answering, or None when nothing
    seems to: its drones are ready and simply at work."""
    held = approval_reason(session)
    if held is not None:
        return held
    try:
        hive = client.get("hive", hive_name, cell)
    except errors.NotFound:
        return f"hive/{hive_name} does not exist (any more)"
    broken = hive_reason(hive)
    if broken is not None:
        return broken
    stages = [s for s in tables.dig(hive, "status", "stages", default=[]) or [] if s]
    if stage is not None:
        key = _stage_key(stage)
        stages = [s for s in stages if _stage_key(str(s.get("name"))) == key] or stages
    if not any(int(s.get("ready") or 0) == 0 for s in stages):
        return None
    drones = client.list("drones", cell, selector=f"{LABEL_HIVE}={hive_name}").get("items") or []
    for s in stages:
        reason = stage_reason(hive, s, list(drones))
        if reason is not None:
            return reason
    return None
