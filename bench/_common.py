"""Helpers every benchmark shares: figures, result files, machine facts and a real ``apiaryd``.

Benchmarks are scripts, not tests (DESIGN §8): each prints its figures and writes them to
``bench/results/<name>.json`` together with the facts needed to compare two runs (cores, Python,
commit, load average). The server is always a real ``apiaryd`` subprocess started the way a user
starts it, so the numbers include HTTP parsing, auth, admission and the store — nothing is called
in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
BENCH_DB_PREFIX = "apiary_bench_"


# ------------------------------------------------------------------------------- event loop

LOOPS = ("uvloop", "asyncio")
"""Event loops a bench that runs Apiary in-process can run on; the first is apiaryd's."""


def run_on_loop(main: Any, loop: str = LOOPS[0]) -> Any:
    """Run the coroutine ``main`` on ``loop``: apiaryd runs on uvloop (server/main.py), so a
    bench that runs its message path in-process measures it on the same loop by default."""
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


# ------------------------------------------------------------------------------------ figures


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100); 0.0 for no values.

    Nearest rank (not interpolation) so a reported p99 is a latency some request really had.
    """
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies_s: Sequence[float], seconds: float) -> dict[str, Any]:
    """p50/p95/p99/mean/max in milliseconds and ops/s for one measured window."""
    lat = sorted(latencies_s)
    ms = 1000.0
    return {
        "requests": len(lat),
        "ops_per_s": round(len(lat) / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(percentile(lat, 50) * ms, 3),
        "p95_ms": round(percentile(lat, 95) * ms, 3),
        "p99_ms": round(percentile(lat, 99) * ms, 3),
        "mean_ms": round(statistics.fmean(lat) * ms, 3) if lat else 0.0,
        "max_ms": round(lat[-1] * ms, 3) if lat else 0.0,
    }


# ------------------------------------------------------------------------------- machine facts


def git_commit() -> str:
    """The checkout's commit (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge a figure: cores, CPU, Python, OS, commit, load."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "commit": git_commit(),
        "pythonpath": os.environ.get("PYTHONPATH", ""),  # set when measuring a source snapshot
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def machine_busy_cpu() -> float:
    """CPU seconds the whole machine has been busy (all cores), to see who else was running."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@dataclass
class Window:
    """A measured window of a closed loop: wall time, this process's CPU (every thread) and the
    whole machine's busy CPU from :meth:`start` to :meth:`figures`."""

    t0: float
    cpu0: float
    busy0: float

    @classmethod
    def start(cls) -> Window:
        return cls(time.perf_counter(), time.process_time(), machine_busy_cpu())

    def figures(self, messages: int) -> dict[str, float]:
        """msgs/s; CPU per message of this process (steadier than msgs/s on a busy machine)
        and of the whole machine (agents, SQLite threads, anyone else), and the cores busy: what
        is left of them says whether a split across processes could still gain."""
        elapsed = time.perf_counter() - self.t0
        cpu, busy = time.process_time() - self.cpu0, machine_busy_cpu() - self.busy0
        return {
            "msgs_per_s": round(messages / elapsed, 1),
            "cpu_us_per_msg": round(cpu / max(1, messages) * 1e6, 1),
            "machine_cores_busy": round(busy / elapsed, 2),
            "machine_cpu_us_per_msg": round(busy / max(1, messages) * 1e6, 1),
        }


def postgres_cpu() -> dict[int, float]:
    """CPU seconds of each PostgreSQL server process by pid (its share of the store's cost).

    By pid, so :func:`cpu_delta` can ignore backends that exit between two readings (their time
    would otherwise vanish from a plain sum and make the delta negative).
    """
    out: dict[int, float] = {}
    for p in psutil.process_iter(["name", "cpu_times"]):
        if p.info["name"] in ("postgres", "postmaster") and p.info["cpu_times"] is not None:
            out[p.pid] = p.info["cpu_times"].user + p.info["cpu_times"].system
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two :func:`postgres_cpu` readings by the processes still alive."""
    return sum(max(0.0, cpu - before.get(pid, 0.0)) for pid, cpu in after.items())


def write_result(name: str, report: dict[str, Any], path: Path | None = None) -> Path:
    """Write ``bench/results/<name>.json`` (or ``path``), stamped with the time; return the path."""
    out = path or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    body = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    body.update(report)
    out.write_text(json.dumps(body, indent=2) + "\n")
    return out


# ------------------------------------------------------------------------------ real apiaryd


@dataclass
class Apiaryd:
    """A running ``apiaryd`` subprocess: where it listens, its admin token and its pid."""

    proc: subprocess.Popen[bytes]
    url: str
    token: str
    data_dir: Path
    log_path: Path
    store_url: str | None
    _closed: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM (graceful: in-flight requests finish), then SIGKILL if it hangs."""
        if self._closed:
            return self.proc.returncode or 0
        self._closed = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _apiaryd_argv(wrapper: Sequence[str]) -> list[str]:
    exe = Path(sys.executable).with_name("apiaryd")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "apiary.server.main"]
    return [*wrapper, *base]


def start_apiaryd(
    data_dir: Path,
    *,
    store_url: str | None = None,
    extra_args: Sequence[str] = (),
    wrapper: Sequence[str] = (),
    timeout: float = 30.0,
) -> Apiaryd:
    """Start ``apiaryd --data-dir D --port 0 [--store URL]`` and wait for its listening line.

    stderr goes to ``D/apiaryd.log`` rather than a pipe, so a chatty server can never block on a
    full pipe while the benchmark is busy measuring. ``wrapper`` prefixes the command (a profiler
    such as ``py-spy record -o x.svg --``).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "apiaryd.log"
    argv = [
        *_apiaryd_argv(wrapper),
        "--data-dir",
        str(data_dir),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--log-level",
        "warning",
        *extra_args,
    ]
    if store_url:
        argv += ["--store", store_url]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT)
    deadline = time.monotonic() + timeout
    marker = re.compile(r'"url": "(http://[^"]+)"')  # the JSON ready line (docs/apiaryd.md)
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        for line in text.splitlines():
            found = marker.search(line) if "apiaryd listening on" in line else None
            if found:
                url = found.group(1)
                token = (data_dir / "admin.token").read_text().strip()
                return Apiaryd(proc, url, token, data_dir, log_path, store_url)
        if proc.poll() is not None:
            raise RuntimeError(f"apiaryd exited with {proc.returncode} during startup:\n{text}")
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"apiaryd did not announce itself within {timeout:.0f} s")


@contextlib.contextmanager
def temp_dir(prefix: str) -> Iterator[Path]:
    """A scratch data directory removed afterwards (benchmarks never touch ~/.local)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------- PostgreSQL


def postgres_base_url() -> str:
    """Where PostgreSQL is (env ``APIARY_BENCH_POSTGRES``, else the machine's default)."""
    return os.environ.get("APIARY_BENCH_POSTGRES", DEFAULT_POSTGRES)


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


async def _admin_execute(base: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_with_database(base, "postgres"), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def fresh_postgres_database(base: str | None = None) -> Iterator[str]:
    """Create ``apiary_bench_<random>``, yield its URL, drop it (``WITH (FORCE)``) afterwards.

    A fresh database per run keeps figures independent of whatever other runs left behind and
    never touches the shared ``test`` database. Raises ``OSError`` when PostgreSQL is unreachable.
    """
    base = base or postgres_base_url()
    name = BENCH_DB_PREFIX + secrets.token_hex(5)
    asyncio.run(_admin_execute(base, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(base, name)
    finally:
        asyncio.run(_admin_execute(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
