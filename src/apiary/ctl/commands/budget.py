"""``apiaryctl budget raise session/ID|hive/NAME|cell --tokens N | --usd X`` and ``budget show``.

A scope whose ``spec.budget.onExhausted`` is ``pause`` holds the call that does not fit and its
session shows ``WaitingForBudget``; ``raise`` lets the scope use N tokens (or X US dollars) more,
and the held call goes on (docs/gateway.md, "Pause, don't kill"). ``show`` prints what the Cell,
its hives and sessions used, hold and wait for.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from apiary.ctl import output
from apiary.ctl.context import get_ctl

Obj = dict[str, Any]

budget_app = typer.Typer(help="LLM budgets: raise a scope's, show usage.", no_args_is_help=True)


def scope_of(target: str) -> str:
    """``session/ID``, ``hive/NAME`` or ``cell`` (plural and short forms too)."""
    kind, sep, name = target.partition("/")
    kinds = {"session": "session", "sessions": "session", "sess": "session", "hive": "hive",
             "hives": "hive", "cell": "cell", "cells": "cell"}  # fmt: skip
    found = kinds.get(kind.lower())
    if found == "cell" and not name:
        return "cell"
    if found in ("session", "hive") and sep and name and "/" not in name:
        return f"{found}/{name}"
    raise typer.BadParameter(
        f"{target!r}: expected session/ID, hive/NAME or cell", param_hint="SCOPE"
    )


def _print(answer: Obj) -> bool:
    ctl = get_ctl()
    if ctl.output == "json":
        output.out(output.dump_json(answer))
    elif ctl.output == "yaml":
        output.out(output.dump_yaml(answer).rstrip("\n"))
    else:
        return False
    return True


@budget_app.command("raise")
def raise_command(
    target: Annotated[str, typer.Argument(help="session/ID, hive/NAME or cell.")],
    tokens: Annotated[int, typer.Option("--tokens", min=0, help="Tokens more.")] = 0,
    usd: Annotated[float, typer.Option("--usd", min=0, help="US dollars more.")] = 0.0,
) -> None:
    """Let a scope's LLM calls use more; calls waiting for it go on."""
    if not tokens and not usd:
        raise typer.BadParameter("give --tokens N or --usd X", param_hint="--tokens")
    ctl = get_ctl()
    body: Obj = {"scope": scope_of(target), "tokens": tokens, "usd": usd}
    path = f"/api/v1/cells/{quote(ctl.cell, safe='')}/llmbudget/raise"
    answer = dict(ctl.client().request("POST", path, json_body=body).body)
    if not _print(answer):
        more = f"{tokens} tokens" if tokens else f"${usd:g}"
        resumed = ", ".join(answer.get("resumed") or []) or "none waiting"
        output.out(f"{body['scope']} raised by {more} (resumed: {resumed})")


@budget_app.command("show")
def show_command() -> None:
    """Tokens and estimated USD used and held per cell, hive and session; who waits."""
    ctl = get_ctl()
    path = f"/api/v1/cells/{quote(ctl.cell, safe='')}/llmbudget"
    answer = dict(ctl.client().request("GET", path).body)
    if _print(answer):
        return
    rows: list[tuple[str, str, Obj]] = [("cell", ctl.cell, dict(answer.get("cell") or {}))]
    rows += [("hive", n, v) for n, v in (answer.get("hives") or {}).items()]
    rows += [("session", n, v) for n, v in (answer.get("sessions") or {}).items()]
    output.out(f"{'SCOPE':<8} {'NAME':<30} {'TOKENS':>10} {'USD':>12} {'HELD':>8} WAITING")
    waiting = answer.get("waiting") or {}
    for kind, name, v in rows:
        wait = "yes" if kind == "session" and name in waiting else ""
        output.out(f"{kind:<8} {name:<30} {v.get('tokens', 0):>10} {v.get('usd', 0):>12.6f} "
                   f"{v.get('heldTokens', 0):>8} {wait}")  # fmt: skip


def register(app: typer.Typer) -> None:
    from apiary.ctl.commands import replay
    from apiary.ctl.commands.session import session_app

    app.add_typer(budget_app, name="budget")
    replay.register(session_app)  # session replay: its runs are the gateway's record/replay
