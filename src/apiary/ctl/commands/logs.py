"""``apiaryctl logs``: a drone's or a hive's log lines on stdout; ``-f`` keeps streaming."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated

import typer

from apiary.ctl import output
from apiary.ctl.context import get_ctl, kind_arg, split_ref
from apiary.ctl.durations import parse_duration


def check_since(since: str) -> None:
    """A duration (``5m``) or an RFC3339 time, else a usage error (exit 2) before any call."""
    try:
        parse_duration(since)
        return
    except ValueError:
        pass
    try:
        datetime.fromisoformat(since)
    except ValueError:
        raise typer.BadParameter(
            f"{since!r} is neither a duration (30s, 5m, 1h) nor an RFC3339 time",
            param_hint="'--since'",
        ) from None


def logs_command(
    target: Annotated[str, typer.Argument(help="drone/NAME or hive/NAME (a bare NAME: a drone).")],
    name: Annotated[str | None, typer.Argument(help="Name, when KIND is given apart.")] = None,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep streaming new lines (Ctrl-C ends).")
    ] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", min=0, help="Only the last N lines.", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only lines newer than 5m, 1h, or an RFC3339 time."),
    ] = None,
    timestamps: Annotated[
        bool, typer.Option("--timestamps", help="Prefix each line with its RFC3339 time.")
    ] = False,
) -> None:
    """Print a drone's log, or a hive's drones merged by time (each line prefixed [drone])."""
    ctl = get_ctl()
    obj_name: str | None
    if "/" not in target and name is None:
        info, obj_name = kind_arg("drone"), target
    else:
        info, obj_name = split_ref(target, name)
    if not obj_name:
        raise typer.BadParameter("logs needs drone/NAME or hive/NAME", param_hint="TARGET")
    if info.kind not in ("Drone", "Hive"):
        raise typer.BadParameter(
            f"logs are kept for drones and hives, not {info.plural}", param_hint="TARGET"
        )
    if since:
        check_since(since)
    lines = ctl.client().logs(
        info, obj_name, ctl.cell, tail=tail, since=since, timestamps=timestamps, follow=follow
    )
    try:
        for line in lines:
            output.out(line)
    except KeyboardInterrupt:  # Ctrl-C is how -f ends: a clean exit, not an error
        with contextlib.suppress(Exception):
            lines.close()  # type: ignore[attr-defined]


def register(app: typer.Typer) -> None:
    app.command("logs")(logs_command)
