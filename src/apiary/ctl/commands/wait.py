"""``apiaryctl wait``: block until an object meets a condition, or is deleted, via a watch."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from apiary import errors
from apiary.client import AsyncApiClient
from apiary.ctl import output, tables, watching
from apiary.ctl.commands.completion import complete_kind, complete_name
from apiary.ctl.context import Ctl, get_ctl, ref, split_ref
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
    target: Annotated[
        str, typer.Argument(help="KIND/NAME (or KIND NAME).", autocompletion=complete_kind)
    ],
    name: Annotated[
        str | None, typer.Argument(help="Object name.", autocompletion=complete_name)
    ] = None,
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
        met = _wait(ctl, info, obj_name, goal, deadline)
    if not met:
        output.error(f"timed out after {timeout} waiting for {goal.describe()} on {what}")
        raise typer.Exit(output.EXIT_FAILED)
    output.out(f"{what} {'deleted' if goal.mode == 'delete' else goal.describe() + ' met'}")


def _wait(ctl: Ctl, info: KindInfo, obj_name: str, goal: Goal, deadline: float) -> bool:
    """True once ``goal`` is met; False when ``deadline`` passes first (to the second: the
    watch is cancelled then, whatever the server is sending)."""
    field = f"metadata.name={obj_name}"

    def met(etype: str, obj: Obj) -> bool:
        if etype == "BOOKMARK" or tables.dig(obj, "metadata", "name") != obj_name:
            return False
        return goal.met(None if etype == "DELETED" else obj)

    async def work(client: AsyncApiClient) -> bool:
        while True:
            listed = await client.list(info, ctl.cell, params={"fieldSelector": field})
            items = [
                o
                for o in listed.get("items") or []
                if tables.dig(o, "metadata", "name") == obj_name
            ]
            if goal.met(items[0] if items else None):
                return True
            rv = tables.dig(listed, "metadata", "resourceVersion")
            try:
                if await watching.watch(client, info, ctl.cell, rv, met, field_selector=field):
                    return True
            except errors.Gone:
                pass
            # the server ended the stream, or the version is too old: list again and resume

    done, _ = watching.until_deadline(ctl, deadline, work)
    return done


def register(app: typer.Typer) -> None:
    app.command("wait")(wait_command)
