"""One module per command; :func:`register_all` adds them all to the app."""

from __future__ import annotations

import typer

from apiary.ctl.commands import apply, config, delete, describe, diff, get, version, wait


def register_all(app: typer.Typer) -> None:
    for module in (apply, get, describe, delete, diff, wait, config, version):
        module.register(app)
