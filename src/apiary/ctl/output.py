"""Where output goes: data to stdout, everything else (warnings, errors, progress) to stderr.

Color only when the stream is a terminal, so piping ``apiaryctl`` never yields escape codes.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import typer
import yaml
from rich.console import Console

from apiary import errors

#: exit codes, documented in docs/cli.md
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def err_console() -> Console:
    # A fresh console each time: CliRunner and tests swap sys.stderr.
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


def out(text: str = "", nl: bool = True) -> None:
    typer.echo(text, nl=nl)


def info(text: str) -> None:
    """A human message (not data): stderr."""
    typer.echo(text, err=True)


def warn(text: str) -> None:
    con = err_console()
    if con.is_terminal:
        con.print(f"[yellow]Warning:[/yellow] {text}", markup=True)
    else:
        typer.echo(f"Warning: {text}", err=True)


def error(message: str, details: list[errors.FieldDetail] | None = None) -> None:
    """``error: <message>`` plus one indented line per field detail, on stderr."""
    con = err_console()
    texts = [f"{d.field}: {d.message}" if d.field else d.message for d in details or []]
    if texts and all(t in message for t in texts) and message.find(texts[0]) > 0:
        # the server also spelled the details out in the message: list them once, indented
        message = message[: message.find(texts[0])].rstrip(" :;")
    lines = [f"  {t}" for t in texts]
    if con.is_terminal:
        con.print("[bold red]error:[/bold red] " + _escape(message), markup=True)
        for line in lines:
            con.print(_escape(line), markup=True)
    else:
        typer.echo(f"error: {message}", err=True)
        for line in lines:
            typer.echo(line, err=True)


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def exit_code_for(exc: errors.ApiaryError) -> int:
    if isinstance(exc, errors.Unavailable | errors.Unauthorized):
        return EXIT_UNREACHABLE
    return EXIT_FAILED


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(obj, sort_keys=False, allow_unicode=True, default_flow_style=False)


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
