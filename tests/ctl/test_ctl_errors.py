"""Connectivity and auth failures: exit 3, one clear line, no traceback — in-process and as a
real ``apiaryctl`` subprocess (the console script users run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from ctlkit import Ctl

from services import free_port


def test_bad_token_exits_3_with_a_clear_message(ctl: Ctl) -> None:
    r = ctl("get", "hives", APIARY_TOKEN="not-the-token")
    assert r.exit_code == 3, r
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert "token" in r.stderr.lower() and r.stdout == ""


def test_no_token_at_all_explains_where_tokens_come_from(ctl: Ctl) -> None:
    r = ctl("get", "hives", APIARY_TOKEN="")
    assert r.exit_code == 3, r
    assert "no token: pass --token, set APIARY_TOKEN" in r.stderr


def test_local_admin_token_is_found_in_the_data_dir(ctl: Ctl) -> None:
    r = ctl("version", APIARY_TOKEN="", APIARY_DATA_DIR=str(ctl.server.data_dir))
    assert r.exit_code == 0, r
    assert r.stdout.splitlines()[1] == f"server {ctl.server.url} (user admin)"


def test_config_file_supplies_server_cell_and_token(ctl: Ctl, cell: str) -> None:
    env = {"APIARY_SERVER": "", "APIARY_TOKEN": ""}
    assert ctl("config", "set", "server", ctl.server.url, **env).exit_code == 0
    assert ctl("config", "set", "token", ctl.server.token, **env).exit_code == 0
    assert ctl("config", "set", "cell", cell, **env).exit_code == 0
    cfg = ctl.home / "config.yaml"
    assert cfg.stat().st_mode & 0o777 == 0o600
    view = ctl("config", "view", **env)
    assert "<redacted>" in view.stdout and ctl.server.token not in view.stdout
    assert f"cell: {cell}" in view.stdout
    r = ctl("get", "hives", **env)
    assert r.exit_code == 0 and f"No hives found in cell '{cell}'" in r.stderr, r
    r = ctl("config", "set", "colour", "blue")
    assert r.exit_code == 2 and "'colour' is not one of" in r.stderr


def test_server_down_exits_3_with_the_hint(ctl: Ctl, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["get", "hives"], ["apply", "-f", "-"], ["wait", "hive/x"], ["version"]):
        r = ctl(*args, input="kind: Cell\nmetadata: {name: x}\n", APIARY_SERVER=url)
        assert r.exit_code == 3, (args, r)
        assert r.stderr.strip().splitlines()[0] == (
            f"error: cannot reach apiaryd at {url}: is it running? "
            "start it with `apiaryd` or `make run`"
        )


def test_console_script_subprocess(ctl: Ctl, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "apiaryctl"
    env = {
        **os.environ,
        "APIARY_CONFIG": str(tmp_path / "none.yaml"),
        "APIARY_SERVER": f"http://127.0.0.1:{free_port()}",
        "APIARY_TOKEN": "x",
    }
    p = subprocess.run(
        [str(exe), "get", "hives"], capture_output=True, text=True, env=env, timeout=30, check=False
    )
    assert p.returncode == 3 and p.stdout == "", p
    assert p.stderr.startswith("error: cannot reach apiaryd") and "\x1b[" not in p.stderr
    env["APIARY_SERVER"], env["APIARY_TOKEN"] = ctl.server.url, ctl.server.token
    p = subprocess.run(
        [str(exe), "get", "cells", "-o", "name"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )
    assert (p.returncode, p.stdout.splitlines()[0]) == (0, "cell/default"), p
