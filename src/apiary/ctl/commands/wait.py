"""``apiaryctl wait``: block until an object meets a condition, or is deleted, via a watch."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from apiary import errors
from apiary.client import ApiClient, WatchTimeout
from apiary.ctl import output, tables
from apiary.ctl.context import get_ctl, ref, split_ref
from apiary.ctl.durations import parse_duration
from apiary.resources import KindInfo

Obj = dict[str, Any]


@dataclass(frozen=True)
class Goal:
    """What ``--for`` asks: ``delete``, ``condition=T[=Status]`` or ``phase=P``."""

    mode: str  # delete | condition | phase
    key: str = ""
    value: str = ""

    @classmethod
    def parse(cls, text: str) -> Goal:
        if text == "delete":
            return cls("delete")
        what, _, rest = text.partition("=")
        if what == "condition" and rest:
            ctype, _, status = rest.partition("=")
            return cls("condition", ctype, status or "True")
        if what == "phase" and rest:
            return cls("phase", value=rest)
        raise typer.BadParameter(
            f"{text!r}: use delete, condition=NAME[=True|False] or phase=PHASE", param_hint="--for"
        )

    def met(self, obj: Obj | None) -> bool:
        if self.mode == "delete":
            return obj is None
        if obj is None:
            return False
        if self.mode == "phase":
            return str(tables.dig(obj, "status", "phase")) == self.value
        cond = tables.condition(obj, self.key)
        return cond is not None and str(cond.get("status")).lower() == self.value.lower()

    def describe(self) -> str:
        if self.mode == "delete":
            return "deletion"
        if self.mode == "phase":
            return f"phase {self.value}"
        return f"condition {self.key}={self.value}"


def wait_command(
    target: Annotated[str, typer.Argument(help="KIND/NAME (or KIND NAME).")],
    name: Annotated[str | None, typer.Argument(help="Object name.")] = None,
    for_: Annotated[
        str, typer.Option("--for", help="delete | condition=Ready[=True] | phase=Running")
    ] = "condition=Ready",
    timeout: Annotated[str, typer.Option("--timeout", help="Give up after (60s, 5m).")] = "60s",
) -> None:
    """Wait until an object meets --for (exit 1 on timeout); a missing object is waited for."""
    ctl = get_ctl()
    info, obj_name = split_ref(target, name)
    if not obj_name:
        raise typer.BadParameter("wait needs KIND/NAME", param_hint="TARGET")
    goal = Goal.parse(for_)
    try:
        seconds = parse_duration(timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--timeout'") from None
    deadline = time.monotonic() + seconds
    what = ref(info, obj_name)
    con = output.err_console()
    progress = (
        con.status(f"waiting for {goal.describe()} on {what}…")
        if con.is_terminal
        else contextlib.nullcontext()
    )
    with progress:
        met = _wait(ctl.client(), info, ctl.cell, obj_name, goal, deadline)
    if not met:
        output.error(f"timed out after {timeout} waiting for {goal.describe()} on {what}")
        raise typer.Exit(output.EXIT_FAILED)
    output.out(f"{what} {'deleted' if goal.mode == 'delete' else goal.describe() + ' met'}")


def _wait(
    client: ApiClient,
    info: KindInfo,
    cell: str,
    obj_name: str,
    goal: Goal,
    deadline: float,
) -> bool:
    """True once ``goal`` is met; False when ``deadline`` passes first."""
    field = f"metadata.name={obj_name}"
    while True:
        listed = client.list(info, cell, params={"fieldSelector": field})
        items = [
            o for o in listed.get("items") or [] if tables.dig(o, "metadata", "name") == obj_name
        ]
        current: Obj | None = items[0] if items else None
        if goal.met(current):
            return True
        rv = tables.dig(listed, "metadata", "resourceVersion")
        try:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for etype, obj in client.watch(
                info, cell, rv, field_selector=field, timeout=remaining, bookmarks=True
            ):
                if etype != "BOOKMARK" and tables.dig(obj, "metadata", "name") == obj_name:
                    current = None if etype == "DELETED" else obj
                    if goal.met(current):
                        return True
                if time.monotonic() >= deadline:
                    break
            else:
                continue  # the server ended the stream: list again and resume
            break
        except WatchTimeout:
            break
        except errors.Gone:
            continue
    return False


def register(app: typer.Typer) -> None:
    app.command("wait")(wait_command)
