"""The API benchmark still runs end to end: real apiaryd, real load-generator process, JSON out.

Not a timed test: it checks that the script works and its figures are coherent, never how fast.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
OPS = {"create", "get", "list", "update"}


def test_api_bench_quick_writes_sane_json(tmp_path: Path) -> None:
    out = tmp_path / "api.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "api.py"),
            "--quick",
            "--stores",
            "sqlite",
            "--clients",
            "1",
            "--seconds",
            "0.25",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["benchmark"] == "api"
    assert report["errors"] == 0
    assert report["machine"]["cores"] >= 1 and report["machine"]["python"]
    assert report["target"] == {"p95_ms_below": 10.0, "at_clients": 50}
    rows = report["results"]
    assert {r["op"] for r in rows} == OPS
    for r in rows:
        assert (r["store"], r["clients"], r["errors"]) == ("sqlite", 1, 0)
        assert r["requests"] > 0 and r["ops_per_s"] > 0
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["mean_ms"] > 0
        assert r["meets_target"] == (r["p95_ms"] < 10.0)
        assert all(c >= 0 for c in r["client_cpu_per_proc"]) and r["server_cpu"] >= 0
    assert "sqlite" in proc.stdout and "update" in proc.stdout  # the table was printed
    # nothing left behind: the apiaryd it announced and its load generators are gone
    found = re.search(r"apiaryd pid (\d+) at (\S+)", proc.stderr)
    assert found, proc.stderr
    pid, url = int(found.group(1)), found.group(2)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    for p in psutil.process_iter(["cmdline"]):
        assert url not in " ".join(p.info["cmdline"] or []), f"left running: {p}"
