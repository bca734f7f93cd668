"""``bench/throughput.py --tracing`` still runs end to end and writes coherent figures (never how
fast anything is): every mode and hive measured, spans only when tracing is on, OTLP posts
received."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tracing_cost_bench_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "tracing_cost.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "throughput.py"), "--tracing", "--seconds", "0.2",
         "--in-flight", "8", "--rounds", "1", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "tracing_cost" and report["machine"]["cores"] >= 1
    rows = {(r["hive"], r["tracing"]): r for r in report["summary"]}
    assert set(rows) == {(h, m) for h in ("cat-r1", "cat-3x2") for m in ("off", "on", "sampled")}
    for (_, mode), row in rows.items():
        assert row["msgs_per_s"] > 0
        assert (row["spans_per_message"] > 0) is (mode == "on") or mode == "sampled"
    spans = {h: rows[(h, "on")]["spans_per_message"] for h in ("cat-r1", "cat-3x2")}
    assert spans["cat-3x2"] > spans["cat-r1"]
    assert report["exported"]["posts"] > 0
