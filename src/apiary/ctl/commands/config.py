"""``apiaryctl config …``: edit the config file — server, cell, token, and named contexts.

The file holds ``server``/``cell``/``token`` at the top, and optionally ``contexts``
(``{name: {server, cell, token}}``) with ``current-context``: the current context's keys win
over the top-level ones (``--context NAME`` / ``$APIARY_CONTEXT`` pick another for one
command). ``config set`` edits the current context when there is one, else the top level.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from apiary.client import config_path, current_context, load_config_file
from apiary.ctl import output, tables

KEYS = ("server", "cell", "token")
Obj = dict[str, Any]
config_app = typer.Typer(
    help="View or edit the config file (server, cell, token, contexts).", no_args_is_help=True
)


def _write(path: Path, config: Obj) -> None:
    """Atomically, with mode 0600: the file may hold tokens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)


def _contexts(config: Obj) -> dict[str, Obj]:
    contexts = config.get("contexts")
    return dict(contexts) if isinstance(contexts, dict) else {}


def _check_key(key: str) -> None:
    if key not in KEYS:
        raise typer.BadParameter(f"{key!r} is not one of {', '.join(KEYS)}", param_hint="KEY")


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(
    key: Annotated[str, typer.Argument(help="server, cell or token.")],
    value: Annotated[str, typer.Argument(help="The value; an empty string removes the key.")],
) -> None:
    """Set (or with "" remove) one key, in the current context if there is one. The file is
    written with mode 0600: it may hold a token."""
    _check_key(key)
    path = config_path()
    config = load_config_file(path)
    name = current_context(config, path)
    target: Obj = dict(_contexts(config)[name]) if name is not None else config
    if value:
        target[key] = value
    else:
        target.pop(key, None)
    if name is not None:
        config["contexts"] = {**_contexts(config), name: target}
    _write(path, config)
    where = f"context {name} in {path}" if name is not None else str(path)
    output.info(f"{key} {'set' if value else 'removed'} in {where}")


@config_app.command("set-context")
def config_set_context(
    name: Annotated[str, typer.Argument(help="The context's name.")],
    server: Annotated[str | None, typer.Option("--server", help="Its apiaryd URL.")] = None,
    cell: Annotated[str | None, typer.Option("--cell", help="Its cell.")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Its bearer token.")] = None,
) -> None:
    """Create a context or change its keys ("" removes one); others are left as they are."""
    path = config_path()
    config = load_config_file(path)
    contexts = _contexts(config)
    existed = name in contexts
    ctx = dict(contexts.get(name) or {})
    for key, value in (("server", server), ("cell", cell), ("token", token)):
        if value is None:
            continue
        if value:
            ctx[key] = value
        else:
            ctx.pop(key, None)
    config["contexts"] = {**contexts, name: ctx}
    _write(path, config)
    output.info(f"context {name} {'modified' if existed else 'created'} in {path}")


@config_app.command("use-context")
def config_use_context(name: Annotated[str, typer.Argument(help="A context's name.")]) -> None:
    """Make a context the current one (what apiaryctl uses unless --context says otherwise)."""
    path = config_path()
    config = load_config_file(path)
    contexts = _contexts(config)
    if name not in contexts:
        known = ", ".join(contexts) or "none"
        raise typer.BadParameter(f"no context {name!r} (contexts: {known})", param_hint="NAME")
    config["current-context"] = name
    _write(path, config)
    output.info(f"switched to context {name}")


@config_app.command("get-contexts")
def config_get_contexts() -> None:
    """List the contexts: CURRENT (*), NAME, SERVER, CELL."""
    path = config_path()
    config = load_config_file(path)
    contexts = _contexts(config)
    if not contexts:
        output.info(f"No contexts in {path}.")
        return
    current = current_context(config, path)
    rows = [
        ["*" if name == current else "", name, tables.text(c.get("server")),
         tables.text(c.get("cell"))]
        for name, c in contexts.items()
    ]  # fmt: skip
    for line in tables.render(rows, ["CURRENT", "NAME", "SERVER", "CELL"]):
        output.out(line.rstrip())


@config_app.command("current-context")
def config_current_context() -> None:
    """Print the current context's name (exit 1 when there is none)."""
    path = config_path()
    name = current_context(load_config_file(path), path)
    if name is None:
        output.error(f"no current context in {path}")
        raise typer.Exit(output.EXIT_FAILED)
    output.out(name)


@config_app.command("delete-context")
def config_delete_context(name: Annotated[str, typer.Argument(help="A context's name.")]) -> None:
    """Delete a context (and unset current-context if it was the current one)."""
    path = config_path()
    config = load_config_file(path)
    contexts = _contexts(config)
    if name not in contexts:
        output.error(f"no context {name!r} in {path}")
        raise typer.Exit(output.EXIT_FAILED)
    del contexts[name]
    config["contexts"] = contexts
    if config.get("current-context") == name:
        config.pop("current-context")
    _write(path, config)
    output.info(f"context {name} deleted from {path}")


@config_app.command("view")
def config_view(
    show_token: Annotated[bool, typer.Option("--show-token", help="Print the tokens.")] = False,
) -> None:
    """Print the config file (tokens redacted unless --show-token)."""
    config = load_config_file()
    if not show_token:
        if "token" in config:
            config["token"] = "<redacted>"
        contexts = _contexts(config)
        if contexts:
            config["contexts"] = {
                n: {**c, "token": "<redacted>"} if "token" in c else c for n, c in contexts.items()
            }
    output.out(output.dump_yaml(config).rstrip("\n") if config else "{}")


@config_app.command("path")
def config_where() -> None:
    """Print where the config file is ($APIARY_CONFIG or ~/.config/apiary/config.yaml)."""
    output.out(str(config_path()))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
