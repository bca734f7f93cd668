"""Help texts: every command has an ``Examples:`` section, brackets in help survive Rich, and
``apply`` of a file with no objects says so."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from ctlkit import Ctl
from typer.testing import CliRunner

from apiary.ctl import examples
from apiary.ctl.main import app

ROOT = typer.main.get_command(app)
COMMANDS = sorted(examples.commands(ROOT))  # type: ignore[arg-type]


def help_of(path: str) -> str:
    r = CliRunner().invoke(app, [*path.split(), "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    return r.output


def test_every_command_has_examples_in_the_table() -> None:
    assert set(COMMANDS) == set(examples.EXAMPLES), "add the new command's examples"


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_shows_its_examples(path: str) -> None:
    text = help_of(path)
    assert "Examples:" in text, text
    first = examples.EXAMPLES[path][0]
    assert "  " + first in text, text  # indented, and whole (no markup eaten)


def test_brackets_in_help_are_shown() -> None:
    text = help_of("logs")
    assert "(each line prefixed [drone])" in text, text
    assert "prefixed )" not in text


def test_apply_of_a_file_without_objects(ctl: Ctl, cell: str, tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# only a comment\n---\n---\n")
    r = ctl("apply", "-f", str(empty), "-n", cell)
    assert r.exit_code == 1 and r.stdout == "", r
    assert f"error: no objects to apply in {empty} (empty, or only comments)" in r.stderr
    real = tmp_path / "real.yaml"
    real.write_text(
        "apiVersion: apiary.io/v1\nkind: AgentSpec\nmetadata: {name: a}\n"
        "spec: {runtime: {command: [cat]}}\n"
    )
    r = ctl("apply", "-f", str(empty), "-f", str(real), "-n", cell)
    assert r.exit_code == 0 and r.stdout == "agentspec/a created\n", r
    assert f"Warning: {empty}: no objects in it" in r.stderr
    r = ctl("apply", "-f", "-", "-n", cell, input="\n")
    assert r.exit_code == 1 and "no objects to apply in <stdin>" in r.stderr, r
