"""The client's config file is YAML a user may have been handed: it is parsed with the same alias
bounds as the API server's bodies, so a "billion laughs" file is an error, not a frozen CLI."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from apiary import errors
from apiary.client.config import load_config

BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{c}: &{c} [{','.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_config_reads_server_cell_token(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text("server: http://127.0.0.1:8080\ncell: team\ntoken: t\n")
    assert load_config(cfg) == {"server": "http://127.0.0.1:8080", "cell": "team", "token": "t"}


def test_alias_bomb_in_config_is_refused_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(BOMB + "server: *i\n")
    started = time.perf_counter()
    with pytest.raises(errors.BadRequest, match="cannot read config file"):
        load_config(cfg)
    assert time.perf_counter() - started < 0.5
