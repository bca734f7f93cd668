"""``bench/floor.py`` runs its plain-Python floors and writes figures that add up.

Not a timed test: it checks that the durable floor really recorded two steps per message (the
input before it was forwarded, the output before it was answered), that the figures are there,
and that the ``cat`` it started is gone. Apiary's own mode is ``throughput.apiary_mode``, which
``test_throughput_smoke.py`` covers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services import alive

ROOT = Path(__file__).resolve().parents[2]


def test_floor_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "floor.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "floor.py"), "--modes", "pipelined,relay,durable",
         "--seconds", "0.3", "--rounds", "1", "--in-flight", "8", "--replicas", "2",
         "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "floor"
    assert set(report["median"]) == {"pipelined", "relay", "durable"}
    for mode, (row,) in report["rounds"].items():
        assert row["messages"] > 0 and row["msgs_per_s"] > 0, mode
        assert 0 < row["machine_cores_busy"] <= 2.5
        assert len(row["agent_pids"]) == 2
        for pid in row["agent_pids"]:
            assert not alive(pid), f"{mode}'s cat left running"
    durable = report["rounds"]["durable"][0]
    assert durable["steps_committed"] >= 2 * durable["messages"]
    assert durable["steps_committed"] % 2 == 0  # never an input without its output
    assert "durable" in proc.stdout
    assert report["ratios"]["target_20000_over_durable"] > 0


def test_floor_names_an_unknown_mode() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "floor.py"), "--modes", "relay,fast"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert (
        "--modes: unknown fast (choose from pipelined, relay, durable, apiary, celery)"
        in proc.stderr
    )
