"""``apiaryctl completion bash|zsh|fish``: the shell script that completes apiaryctl.

The script calls ``apiaryctl`` back with ``_APIARYCTL_COMPLETE=complete_<shell>`` to ask for
the words; commands, options, kinds and (for ``get``, ``describe``, ``delete`` …) the names of
the objects in the cell come from there. Names are listed from the server with a short timeout;
an unreachable server completes nothing rather than hang the shell.
"""

from __future__ import annotations

from typing import Annotated

import typer
from typer._click.core import Context as ClickContext
from typer._click.globals import get_current_context
from typer._click.shell_completion import get_completion_class
from typer._completion_classes import completion_init

from apiary import client as api
from apiary.ctl import output
from apiary.resources import KINDS, lookup_kind

SHELLS = ("bash", "zsh", "fish")
PROG = "apiaryctl"
COMPLETE_VAR = "_APIARYCTL_COMPLETE"
NAME_TIMEOUT = 2.0
"""Seconds a completion waits for the server to list names."""


def init() -> None:
    """Register Typer's completion classes (the scripts below speak their protocol)."""
    completion_init()


def kind_words() -> list[str]:
    words: list[str] = []
    for k in KINDS:
        words += [k.plural, k.singular, *k.short]
    return sorted(set(words))


def complete_kind(ctx: ClickContext, incomplete: str) -> list[str]:
    """Kinds (``hives``, ``hive``, ``hv`` …), and ``kind/`` + names after a slash."""
    if "/" in incomplete:
        kind, _, start = incomplete.partition("/")
        return [f"{kind}/{n}" for n in object_names(ctx, kind, start)]
    return [w for w in kind_words() if w.startswith(incomplete.lower())]


def complete_name(ctx: ClickContext, incomplete: str) -> list[str]:
    """Names of the objects of the KIND given before, in the cell of ``-n``."""
    kind = ctx.params.get("kind") or ctx.params.get("target") or ""
    if not isinstance(kind, str) or not kind or "/" in kind:
        return []
    return object_names(ctx, kind, incomplete)


def object_names(ctx: ClickContext, kind: str, start: str) -> list[str]:
    info = lookup_kind(kind)
    if info is None:
        return []
    root = ctx.find_root().params
    config = api.load_config()
    server = api.normalize_server(root.get("server") or config.get("server"))
    cell = root.get("cell") or config.get("cell") or api.DEFAULT_CELL
    token = root.get("token") or config.get("token") or None
    try:
        with api.ApiClient(server, token, cell, timeout=NAME_TIMEOUT) as c:
            items = c.list(info, cell).get("items") or []
    except Exception:  # completion must never print a traceback into a shell
        return []
    names = [str((o.get("metadata") or {}).get("name") or "") for o in items]
    return sorted(n for n in names if n and n.startswith(start))


def completion_command(
    shell: Annotated[str, typer.Argument(help="bash, zsh or fish.", metavar="SHELL")],
) -> None:
    """Print the shell code that completes apiaryctl commands, options, kinds and names."""
    if shell not in SHELLS:
        raise typer.BadParameter(f"{shell!r}: one of {', '.join(SHELLS)}", param_hint="SHELL")
    init()
    cls = get_completion_class(shell)
    assert cls is not None  # completion_init registered all three
    root = get_current_context().find_root().command
    output.out(cls(root, {}, PROG, COMPLETE_VAR).source().strip("\n"))


def register(app: typer.Typer) -> None:
    app.command("completion")(completion_command)
