"""``apiaryd node`` with a node token for one node and ``--name`` of another stops at once with
a line that names both, instead of joining and then failing every Node write with a 403."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .cluster import Apiaryd, _apiaryd


def test_a_node_token_for_another_name_is_refused_at_start(tmp_path: Path) -> None:
    server = Apiaryd(tmp_path / "data").start()
    try:
        c = server.client("default")
        made = c.request("POST", "/api/v1/tokens", json_body={
            "metadata": {"name": "worker-1"}, "spec": {"role": "node", "node": "worker-1"},
        }).body  # fmt: skip
        token_file = tmp_path / "node.token"
        token_file.write_text(made["status"]["token"])
        done = subprocess.run(
            [*_apiaryd(), "node", "--server", server.url, "--token-file", str(token_file),
             "--name", "worker-2", "--data-dir", str(tmp_path / "node")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert "the token speaks for node 'worker-1', not 'worker-2'" in done.stderr
        assert "--name worker-1" in done.stderr
        assert "joined" not in done.stderr
    finally:
        server.stop()
