"""The throughput benchmark still runs end to end (``--quick``: Apiary embedded only).

Not a timed test: it checks that the script works, that every figure is there and coherent,
and that it leaves no agent process behind — never how fast anything is.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services import alive

ROOT = Path(__file__).resolve().parents[2]
TARGETS = {
    "embedded_msgs_per_s",
    "added_p50_ms_per_hop",
    "added_p99_ms_per_hop",
}


def test_throughput_quick_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "throughput.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--quick", "--seconds", "0.25",
         "--in-flight", "16", "--latency-messages", "20", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "throughput" and report["quick"] is True
    assert report["machine"]["cores"] >= 1 and report["machine"]["python"]
    emb = report["embedded"]
    assert (emb["bus"], emb["journal"]) == ("memory", "sqlite")
    rows = {r["hive"]: r for r in emb["throughput"]}
    assert set(rows) == {"cat-r1", "cat-r2", "echo-r2", "cat-3x2"}
    for r in rows.values():
        assert r["messages"] > 0 and r["msgs_per_s"] > 0
        assert abs(r["hops_per_s"] - r["msgs_per_s"] * r["stages"]) <= r["stages"]
        assert 0 < r["p50_ms"] <= r["p99_ms"]
    assert rows["cat-3x2"]["stages"] == 3 and rows["cat-3x2"]["replicas_per_stage"] == 2
    assert rows["echo-r2"]["agent"] == "echo"
    lat = emb["latency"]
    for key in ("e2e_1_stage", "e2e_3_stages"):
        assert 0 < lat[f"{key}_p50_ms"] <= lat[f"{key}_p99_ms"]
    assert lat["messages"] == 20
    alone = report["agent_alone_through_keeper"]
    assert alone["cat"]["scenario"] == "cat" and alone["sdk-echo"]["p50_ms"] > 0
    targets = report["targets"]
    assert set(targets) >= TARGETS
    for v in targets.values():
        assert {"measured", "target", "met"} <= set(v) and isinstance(v["met"], bool)
    assert targets["embedded_msgs_per_s"]["measured"] == max(
        r["msgs_per_s"] for r in rows.values() if r["stages"] == 1
    )
    assert "embedded" in proc.stdout and "target" in proc.stdout  # the table was printed
    assert "nats" not in report and "celery" not in report  # --quick: embedded only
    # Nothing left behind: every agent process it started (12 drones) is gone.
    assert len(emb["drone_pids"]) == 12
    for pid in emb["drone_pids"]:
        assert not alive(pid), f"agent process {pid} left running"
