"""``apiaryctl version``: the client's version and, unless ``--client``, the server it reaches."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from typing import Annotated

import typer

from apiary.ctl import output
from apiary.ctl.context import get_ctl


def client_version() -> str:
    try:
        return dist_version("apiary")
    except PackageNotFoundError:  # running from a source tree without installing
        return "0.0.0+unknown"


def version_command(
    client_only: Annotated[
        bool, typer.Option("--client", help="Do not contact the server.")
    ] = False,
) -> None:
    """Print the client version and check the server and token (unless --client)."""
    ctl = get_ctl()
    output.out(f"apiaryctl {client_version()}")
    if client_only:
        return
    who = ctl.client().whoami()
    output.out(f"server {ctl.server} (user {who.get('user', '?')})")


def register(app: typer.Typer) -> None:
    app.command("version")(version_command)
