"""The data dir is apiaryd's alone (DESIGN §9): 0700, every file 0600, whatever it was before."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import httpx

from .daemon_proc import start


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        if not path.is_symlink():
            out[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return out


def test_an_open_data_dir_is_closed_at_start_and_new_files_are_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = start(data, "--no-local-node")
    d.terminate()
    # Someone opened it up (a copy, a restore, a careless chmod -R).
    for path in [data, *data.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    (data / "logs").mkdir(exist_ok=True)
    (data / "logs" / "old.log").write_text("x")
    os.chmod(data / "logs" / "old.log", 0o666)
    d = start(data, "--no-local-node")
    try:
        body = {"apiVersion": "apiary.io/v1", "kind": "Secret", "metadata": {"name": "s"},
                "stringData": {"k": "v"}}  # fmt: skip
        r = httpx.post(f"{d.url}/api/v1/cells/default/secrets", json=body, headers=d.headers)
        assert r.status_code == 201, r.text
        modes = _modes(data)  # including what the stores wrote since (WAL files...)
    finally:
        d.terminate()
    assert modes["."] == 0o700
    for name, mode in modes.items():
        assert mode & 0o077 == 0, (name, oct(mode))  # nothing for group or others
        if not (data / name).is_dir():
            assert mode == 0o600, (name, oct(mode))
    assert {"admin.token", "secret.key", "apiary.db"} <= set(modes)
