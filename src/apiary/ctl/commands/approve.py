"""``apiaryctl approve|reject session/ID [--stage S] [--reason R]``: a human's answer to a gate.

A stage with ``approval: required`` holds its dispatches (durably: across restarts) and the
session shows ``WaitingForApproval``; ``approve`` releases them, ``reject`` fails their flows with
reason ``Rejected``. Without ``--stage`` every held stage is answered. Nothing waiting exits 1.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from apiary.ctl import output
from apiary.ctl.context import get_ctl

Obj = dict[str, Any]

SessionArg = Annotated[str, typer.Argument(help="session/ID (or just ID).", show_default=False)]
StageOpt = Annotated[str | None, typer.Option("--stage", help="Only this stage's held dispatches.")]


def session_of(target: str) -> str:
    """``session/ID`` (``sess/``, ``sessions/``) or a bare ``ID`` → ID."""
    kind, sep, name = target.partition("/")
    if not sep:
        kind, name = "session", target
    if kind.lower() not in ("session", "sessions", "sess") or not name or "/" in name:
        raise typer.BadParameter(f"{target!r}: expected session/ID", param_hint="SESSION")
    return name


def _decide(verb: str, target: str, body: Obj) -> Obj:
    ctl = get_ctl()
    name = session_of(target)
    path = f"/api/v1/cells/{quote(ctl.cell, safe='')}/sessions/{quote(name, safe='')}/{verb}"
    answer = dict(ctl.client().request("POST", path, json_body=body).body)
    if ctl.output == "json":
        output.out(output.dump_json(answer))
    elif ctl.output == "yaml":
        output.out(output.dump_yaml(answer).rstrip("\n"))
    elif ctl.output == "name":
        output.out(f"session/{name}")
    return answer


def approve_command(target: SessionArg, stage: StageOpt = None) -> None:
    """Release what a session holds for approval; its flow continues."""
    answer = _decide("approve", target, {"stage": stage} if stage else {})
    if get_ctl().output in ("table", "wide"):
        where = f" at stage {stage}" if stage else ""
        n = answer.get("released")
        output.out(f"session/{answer.get('session')} approved{where} ({n} released)")


def reject_command(
    target: SessionArg,
    stage: StageOpt = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; the failed flow carries it.")
    ] = None,
) -> None:
    """Refuse what a session holds for approval; its flow fails with reason Rejected."""
    body: Obj = {"stage": stage} if stage else {}
    if reason is not None:
        body["reason"] = reason
    answer = _decide("reject", target, body)
    if get_ctl().output in ("table", "wide"):
        where = f" at stage {stage}" if stage else ""
        n = answer.get("rejected")
        output.out(f"session/{answer.get('session')} rejected{where} ({n}): {answer.get('reason')}")


def register(app: typer.Typer) -> None:
    app.command("approve")(approve_command)
    app.command("reject")(reject_command)
