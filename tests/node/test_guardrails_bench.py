"""bench/guardrails.py still runs end to end (a real echo drone) and writes coherent JSON.

Not a timed test: it checks the script and the shape of its figures, never how fast they are.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_guardrails_bench_quick_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "guardrails.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "guardrails.py"), "--messages", "60",
         "--calls", "500", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "chain alone" in proc.stdout and "echo drone round trip" in proc.stdout
    report = json.loads(out.read_text())
    assert report["benchmark"] == "guardrails"
    assert report["chain"]["on_us"]["count"] == 500
    assert report["worker"]["on_ms"]["count"] == report["worker"]["off_ms"]["count"] == 60
    assert report["worker"]["schema_violations"] == 0  # the echo's answers satisfy the schema
    assert report["worker"]["on_ms"]["p50"] > 0 and set(report["overhead"]) == {
        "chain_p50_us", "chain_p99_us", "worker_p50_ms", "worker_p99_ms",
    }  # fmt: skip
