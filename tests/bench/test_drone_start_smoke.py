"""Smoke test of ``bench/drone_start.py --quick``: it runs end to end against a real apiaryd and
writes a JSON that holds every figure the benchmark promises. Not a timing test — the bounds
below only catch a broken pipeline (a drone that never gets Ready would time out instead)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "drone_start.py"


def _apiaryd_of(data_dir_prefix: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if any(data_dir_prefix in part for part in cmdline):
            found.append(proc)
    return found


def test_quick_run_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "drone_start.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--runs", "3", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "python-echo" in done.stdout and "p50 ms" in done.stdout

    report = json.loads(out.read_text())
    assert report["benchmark"] == "drone_start"
    assert report["machine"]["cores"] >= 1 and report["machine"]["python"]
    assert report["runs"] == 3 and report["runs_x10"] == 1

    scenarios = {s["scenario"]: s for s in report["drone_start"]}
    assert set(scenarios) == {"python-echo", "python-echo-x10", "seed03-sh"}
    assert scenarios["python-echo-x10"]["replicas"] == 10
    for s in scenarios.values():
        assert s["requests"] >= 1 and s["apiaryd_cpu_ms_per_drone"] >= 0
        assert 0 < s["p50_ms"] <= s["p95_ms"] <= s["max_ms"] < 30_000
        steps = s["breakdown_p50_ms"]
        assert list(steps) == [
            "apply->created",
            "created->scheduled",
            "scheduled->started",
            "started->ready",
        ]
        assert all(v >= 0 for v in steps.values()) and s["accepted_p50_ms"] > 0

    floors = {f["scenario"]: f for f in report["floors"]}
    assert set(floors) == {
        "python -c pass",
        "python -I -S -c pass",
        "echo.py first answer",
        "seed03-sh first answer",
    }
    assert all(f["p50_ms"] > 0 for f in floors.values())

    warm = {w["scenario"]: w for w in report["warm_pool"]}  # issue 14: claim beside cold
    assert set(warm) == {"warm-claim-x3", "cold-scale-x3", "first-answer-warm",
                         "first-answer-cold"}  # fmt: skip
    assert report["warm_runs"] == 1 and all(w["p50_ms"] > 0 for w in warm.values())
    assert warm["warm-claim-x3"]["refill"]["p50_ms"] > 0
    claim = warm["warm-claim-x3"]
    # Negative when the watch saw the claimed drones serving before the PUT's answer came back
    # (the Queen acts on the change before the response is read): never before the PUT began.
    assert claim["after_put_p50_ms"] >= -claim["put_p50_ms"]

    relay = report["keeper_relay"]
    assert {r["concurrency"] for r in relay} == {1, 16}
    assert all(r["scenario"] == "sdk-echo" and r["msgs_per_s"] > 0 for r in relay)

    assert not _apiaryd_of("apiary-drone-start-"), "the benchmark left its apiaryd running"
