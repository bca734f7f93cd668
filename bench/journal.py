"""Steps per second the journal commits for many sessions at once, per backend (docs/sessions.md:
every message hop is one step — one ``commit`` of ~2 entries plus the session's state document —
and the system target is ≥ 20,000 messages/s embedded on 2 cores, so the journal must stay well
above that).

For every backend (memory, SQLite, PostgreSQL) and every concurrency (1, 64, 512 sessions, each
driven by its own committer the way the router drives many sessions at once), committers loop
``commit(expect_version=v)`` for a measured window after a short warm-up. The durable backends
batch the steps that are ready into one transaction (``GroupCommit``: SQLite one write
transaction in WAL mode, PostgreSQL one round trip of set-based statements) and acknowledge each
step when its batch is durable. Reported: steps/s, entries/s, step latency percentiles, and for
the batching backends the mean steps per transaction.

Prints a table and writes ``bench/results/journal.json``. PostgreSQL runs in a fresh database
(dropped afterwards) and is skipped with a note when unreachable.

    .venv/bin/python bench/journal.py [--seconds 3] [--backends memory,sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import (  # noqa: E402
    fresh_postgres_database,
    latency_summary,
    machine_info,
    write_result,
)

from apiary.journal import Entry, Journal, open_journal  # noqa: E402

CONCURRENCY = (1, 64, 512)
WARMUP = 0.5

# A state document like the pattern engine's for a pipeline mid-flight (~300 bytes).
STATE: dict[str, Any] = {
    "pattern": "pipeline",
    "input": "4f1c2a9be0d3c7a1e2f4",
    "stage": 2,
    "open": {"a1b2c3d4e5f6a7b8c9d0": {"stage": "summarize", "cause": "0f9e8d7c6b5a49382716"}},
    "turns": 3,
    "done": False,
    "outputs": [{"stage": "research", "id": "5e4d3c2b1a0f9e8d7c6b"}],
    "usage": {"prompt": 1234, "completion": 567},
}


def _message(kind: str, n: int) -> dict[str, Any]:
    return {
        "id": f"{kind}-{n:012d}",
        "type": "text",
        "payload": "The quick brown fox jumps over the lazy dog. " * 2,
        "metadata": {"stage": "summarize", "hops": 1},
        "correlationId": "4f1c2a9be0d3c7a1e2f4",
    }


async def _measure(journal: Journal, concurrency: int, seconds: float) -> dict[str, Any]:
    stop = asyncio.Event()
    done = 0
    recording = False
    latencies: list[float] = []
    inline = getattr(journal, "group", None) is None

    async def committer(worker: int) -> None:
        nonlocal done
        session = f"bench-c{concurrency}/s{worker}"
        version, n = 0, 0
        while not stop.is_set():
            entries = [
                Entry(
                    session,
                    f"o{n}",
                    "output",
                    _message("o", n),
                    parent=f"d{n - 1}",
                    stage="research",
                    drone="research-0",
                    latency_ms=3.2,
                    prompt_tokens=120,
                    completion_tokens=40,
                ),
                Entry(
                    session,
                    f"d{n}",
                    "dispatch",
                    _message("d", n),
                    parent=f"o{n}",
                    stage="summarize",
                ),
            ]
            started = time.perf_counter()
            new = await journal.commit(
                session, expect_version=version, state=STATE, entries=entries
            )
            if recording:
                latencies.append(time.perf_counter() - started)
            if new is None:
                raise RuntimeError(f"{session}: unexpected version conflict at {version}")
            version, n = new, n + 1
            done += 1
            if inline:
                # The memory journal never suspends: without this a committer would starve the
                # event loop (and the timer ending the window) forever.
                await asyncio.sleep(0)

    tasks = [asyncio.create_task(committer(w)) for w in range(concurrency)]
    try:
        await asyncio.sleep(WARMUP)
        recording, start_count, started = True, done, time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed, count = time.perf_counter() - started, done - start_count
        recording = False
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    summary = latency_summary(latencies, elapsed)
    summary["steps_per_s"] = round(count / elapsed, 1)
    summary["entries_per_s"] = round(2 * count / elapsed, 1)
    return summary


async def _run_backend(url: str, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for concurrency in CONCURRENCY:
        journal = open_journal(url)
        await journal.open()
        try:
            group = getattr(journal, "group", None)
            before = (group.batches, group.items) if group is not None else (0, 0)
            row = await _measure(journal, concurrency, seconds)
            if group is not None and group.batches > before[0]:
                per_batch = (group.items - before[1]) / (group.batches - before[0])
                row["steps_per_transaction"] = round(per_batch, 1)
        finally:
            await journal.close()
        row["concurrency"] = concurrency
        rows.append(row)
    return rows


@contextlib.contextmanager
def _backend_url(backend: str) -> Iterator[str]:
    if backend == "memory":
        yield "memory://"
    elif backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="apiary-journal-bench-") as tmp:
            yield f"sqlite://{Path(tmp) / 'journal.db'}"
    else:
        with fresh_postgres_database() as url:
            yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="measured window per cell")
    parser.add_argument("--backends", default="memory,sqlite,postgresql")
    args, _ = parser.parse_known_args()
    report: dict[str, Any] = {"machine": machine_info(), "seconds": args.seconds, "results": {}}
    print(
        f"{'backend':<11} {'sessions':>8} {'steps/s':>10} {'entries/s':>10} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'steps/txn':>9}"
    )
    for backend in args.backends.split(","):
        try:
            with _backend_url(backend) as url:
                rows = asyncio.run(_run_backend(url, args.seconds))
        except OSError as exc:
            print(f"{backend:<11} skipped: {exc}")
            report["results"][backend] = {"skipped": str(exc)}
            continue
        report["results"][backend] = rows
        for r in rows:
            print(
                f"{backend:<11} {r['concurrency']:>8} {r['steps_per_s']:>10,.0f} "
                f"{r['entries_per_s']:>10,.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} "
                f"{r.get('steps_per_transaction', ''):>9}"
            )
    out = write_result("journal", report)
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
