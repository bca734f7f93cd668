"""``bench/metrics_cost.py`` still runs end to end and writes coherent figures (never how fast
anything is): both hives measured with the taps off and on, the recorder counting answers only
when they are on, and the taps-alone figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_metrics_cost_bench_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "metrics_cost.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "metrics_cost.py"), "--seconds", "0.2",
         "--in-flight", "8", "--rounds", "1", "--alone", "500", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "metrics_cost" and report["machine"]["cores"] >= 1
    rows = {(r["hive"], r["taps"]): r for r in report["summary"]}
    assert set(rows) == {(h, m) for h in ("cat-r1", "cat-3x2") for m in ("off", "on")}
    assert all(row["msgs_per_s"] > 0 and row["cpu_us_per_msg"] > 0 for row in rows.values())
    for r in report["rounds"]:  # the recorder counts exactly when the taps are on
        assert (r["answers_counted"] > 0) is (r["taps"] == "on"), r
    assert report["taps_alone"]["messages"] == 500 and report["taps_alone"]["us_per_msg"] > 0
