"""``apiaryctl config set|view|path``: edit the config file (server, cell, token)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
import yaml

from apiary.client import config_path, load_config
from apiary.ctl import output

KEYS = ("server", "cell", "token")
config_app = typer.Typer(
    help="View or edit the config file (server, cell, token).", no_args_is_help=True
)


@config_app.command("set")
def config_set(
    key: Annotated[str, typer.Argument(help="server, cell or token.")],
    value: Annotated[str, typer.Argument(help="The value; an empty string removes the key.")],
) -> None:
    """Set (or with "" remove) one key. The file is written with mode 0600: it may hold a token."""
    if key not in KEYS:
        raise typer.BadParameter(f"{key!r} is not one of {', '.join(KEYS)}", param_hint="KEY")
    path = config_path()
    config = load_config(path)
    if value:
        config[key] = value
    else:
        config.pop(key, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(yaml.safe_dump(config, sort_keys=False))
    os.replace(tmp, path)
    output.info(f"{key} {'set' if value else 'removed'} in {path}")


@config_app.command("view")
def config_view(
    show_token: Annotated[bool, typer.Option("--show-token", help="Print the token.")] = False,
) -> None:
    """Print the config file (the token redacted unless --show-token)."""
    config = load_config()
    if "token" in config and not show_token:
        config["token"] = "<redacted>"
    output.out(output.dump_yaml(config).rstrip("\n") if config else "{}")


@config_app.command("path")
def config_where() -> None:
    """Print where the config file is ($APIARY_CONFIG or ~/.config/apiary/config.yaml)."""
    output.out(str(config_path()))


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
