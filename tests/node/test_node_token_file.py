"""apiaryd node's token sources: --token-file, $APIARY_TOKEN_FILE, --token (with one warning
line: argv is world-readable), and clear exits for an unreadable or empty file."""

from __future__ import annotations

from pathlib import Path

import pytest

from apiary.node.main import ARGV_WARNING, node_token


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APIARY_TOKEN_FILE", raising=False)


def test_token_file_is_read_and_stripped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "node.token"
    f.write_text("apiary_n1_secretsecretsecretsecret\n")
    assert node_token(None, f) == "apiary_n1_secretsecretsecretsecret"
    assert capsys.readouterr().err == ""


def test_the_env_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "node.token"
    f.write_text("from-env-file")
    monkeypatch.setenv("APIARY_TOKEN_FILE", str(f))
    assert node_token(None, None) == "from-env-file"
    assert capsys.readouterr().err == ""


def test_argv_token_works_and_warns_once(capsys: pytest.CaptureFixture[str]) -> None:
    assert node_token("on-the-command-line", None) == "on-the-command-line"
    err = capsys.readouterr().err
    assert err == ARGV_WARNING + "\n"
    assert "--token-file" in err
    assert "every local user" in err


def test_nothing_given_falls_back_to_the_client(capsys: pytest.CaptureFixture[str]) -> None:
    assert node_token(None, None) is None  # the client then reads $APIARY_TOKEN
    assert capsys.readouterr().err == ""


def test_a_missing_file_exits_naming_it(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"cannot read the token file .*missing"):
        node_token(None, tmp_path / "missing")


def test_an_empty_file_exits_naming_it(tmp_path: Path) -> None:
    f = tmp_path / "empty"
    f.write_text("  \n")
    with pytest.raises(SystemExit, match="is empty"):
        node_token(None, f)
