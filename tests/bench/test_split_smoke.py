"""``bench/split.py`` still runs with the node agent apart (``apiaryd node`` on NATS, and the
child ``apiaryd --node-process`` runs, served the in-process bus) and as two shard processes.

Not a timed test: it checks that the node process really ran the drones, that the figures are
there and coherent, and that nothing it started (the node, its agents) is left running.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services import alive, require_nats

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.mark.parametrize("mode", ["nats-apart", "embedded-apart", "shards-2"])
def test_split_with_the_node_apart_writes_sane_json(tmp_path: Path, mode: str) -> None:
    out = tmp_path / "split.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "split.py"), "--modes", mode,
         "--seconds", "0.3", "--rounds", "1", "--in-flight", "8", "--latency-messages", "3",
         "--nats", require_nats(), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "split"
    rows = {r["hive"]: r for r in report["summary"]}
    assert set(rows) == {"cat-r1", "cat-r2", "echo-r2"}
    for r in rows.values():
        assert r["mode"] == mode and r["msgs_per_s"] > 0
        assert 0 < r["machine_cores_busy"] <= 2.5
        if mode == "shards-2":
            assert r["node_cpu_us_per_msg"] is None
        else:
            assert r["node_cpu_us_per_msg"] is not None and r["node_cpu_us_per_msg"] > 0
    if mode == "shards-2":  # both shards measured each hive, and their figures add up
        for run in report["runs"]:
            assert len(run["shards"]) == 2
            assert run["messages"] == sum(s["messages"] for s in run["shards"]) > 0
        assert mode not in report["latency_summary"]
    assert mode in proc.stdout
    # 12 drones and the node; with two shards, each its own 12 drones and node in-process
    assert len(report["pids"]) == (24 if mode == "shards-2" else 13)
    for pid in report["pids"]:
        assert not alive(pid), f"process {pid} left running"
