"""``apiaryd node``: the token from --token-file / APIARY_TOKEN_FILE; --token on argv warns."""

from __future__ import annotations

from pathlib import Path

import pytest

from apiary.node.main import ARGV_WARNING, node_token


def test_the_token_file_wins_and_is_stripped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("APIARY_TOKEN_FILE", raising=False)
    f = tmp_path / "node.token"
    f.write_text("apiary_n1_secret\n")
    assert node_token(None, f) == "apiary_n1_secret"
    assert node_token("from-argv", f) == "apiary_n1_secret"


def test_the_env_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "t"
    f.write_text("tok")
    monkeypatch.setenv("APIARY_TOKEN_FILE", str(f))
    assert node_token(None, None) == "tok"
    assert capsys.readouterr().err == ""


def test_argv_works_but_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("APIARY_TOKEN_FILE", raising=False)
    assert node_token("tok", None) == "tok"
    assert capsys.readouterr().err.strip() == ARGV_WARNING
    assert node_token(None, None) is None  # the client falls back to $APIARY_TOKEN


def test_a_missing_or_empty_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="cannot read the token file"):
        node_token(None, tmp_path / "nope")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(SystemExit, match="is empty"):
        node_token(None, tmp_path / "empty")
