"""How fast one keeper relays messages through one real agent process (DESIGN §8: added latency
per hop < 1 ms p50 / < 5 ms p99; throughput ≥ 20,000/s embedded).

Scenarios, each at concurrency 1 (one message at a time) and pipelined (16 in flight):

* ``sdk-echo``   — examples/agents/echo.py, stdin + waggle format (the SDK on the agent side);
* ``cat``        — ``cat`` as a text-format filter (the cheapest possible agent);
* ``seed03-sh``  — seed 03's ``while read; do echo; done`` shell loop, text format;
* ``raw-cat``    — no keeper: a bare asyncio pipe round trip to ``cat``, the floor on this machine.

Prints a table and writes ``bench/results/keeper_relay.json``.

    .venv/bin/python bench/keeper_relay.py [--messages 20000] [--uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from apiary.node.keeper import Keeper  # noqa: E402
from apiary.waggle import Message  # noqa: E402

SEED_03_LOOP = 'while IFS= read -r line; do echo "Echo: $line"; done'
PIPELINE = 16


async def spawn(*argv: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )


async def reap(proc: asyncio.subprocess.Process) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 5)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def drive(
    send: Callable[[int], Awaitable[None]], total: int, concurrency: int
) -> tuple[float, list[float]]:
    """Run ``total`` sends with ``concurrency`` workers; return (seconds, per-message latencies)."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        clock = time.perf_counter
        for i in counter:
            t0 = clock()
            await send(i)
            latencies.append(clock() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, latencies


def summarise(name: str, concurrency: int, seconds: float, lat: list[float]) -> dict[str, Any]:
    lat.sort()
    return {
        "scenario": name,
        "concurrency": concurrency,
        "messages": len(lat),
        "msgs_per_s": round(len(lat) / seconds),
        "p50_ms": round(lat[len(lat) // 2] * 1000, 4),
        "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 4),
        "mean_ms": round(statistics.fmean(lat) * 1000, 4),
    }


async def keeper_case(
    name: str, argv: list[str], fmt: str, concurrency: int, total: int
) -> dict[str, Any]:
    keeper = Keeper({"type": "stdin", "format": fmt, "concurrency": concurrency})
    proc = await spawn(*argv)
    await keeper.attach(proc)
    await keeper.start()
    payload = "hello from the bench"

    async def send(i: int) -> None:
        outs = await keeper.deliver(Message(payload), timeout=30)
        if len(outs) != 1:
            raise RuntimeError(f"{name}: expected one output, got {outs!r}")

    await drive(send, min(500, total), concurrency)  # warm-up (imports, caches, pipe buffers)
    seconds, lat = await drive(send, total, concurrency)
    await keeper.stop()
    await reap(proc)
    return summarise(name, concurrency, seconds, lat)


async def raw_cat_case(concurrency: int, total: int) -> dict[str, Any]:
    """The floor: write a line to ``cat`` and read it back, no keeper, no Waggle."""
    proc = await spawn("cat")
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    line = b"hello from the bench\n"
    waiters: list[asyncio.Future[None]] = []
    loop = asyncio.get_running_loop()

    async def reader() -> None:
        while await stdout.readline():
            waiters.pop(0).set_result(None)

    read_task = asyncio.create_task(reader())

    async def send(i: int) -> None:
        fut = loop.create_future()
        waiters.append(fut)
        stdin.write(line)
        await stdin.drain()
        await fut

    await drive(send, min(500, total), concurrency)
    seconds, lat = await drive(send, total, concurrency)
    await reap(proc)
    await read_task
    return summarise("raw-cat", concurrency, seconds, lat)


async def main(total: int) -> list[dict[str, Any]]:
    echo = [sys.executable, str(ROOT / "examples" / "agents" / "echo.py")]
    results = []
    for conc in (1, PIPELINE):
        n = total if conc > 1 else max(1000, total // 4)
        results.append(await raw_cat_case(conc, n))
        results.append(await keeper_case("cat", ["cat"], "text", conc, n))
        results.append(await keeper_case("sdk-echo", echo, "waggle", conc, n))
        results.append(
            await keeper_case("seed03-sh", ["/bin/sh", "-c", SEED_03_LOOP], "text", conc, n // 4)
        )
    return results


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'scenario':<11} {'conc':>4} {'msgs':>7} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['scenario']:<11} {r['concurrency']:>4} {r['messages']:>7} {r['msgs_per_s']:>9}"
            f" {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="messages per pipelined run")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop instead of asyncio")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop

        uvloop.install()
    rows = asyncio.run(main(args.messages))
    print(table(rows))
    floor = {r["concurrency"]: r for r in rows if r["scenario"] == "raw-cat"}
    for r in rows:
        r["p50_over_raw_ms"] = round(r["p50_ms"] - floor[r["concurrency"]]["p50_ms"], 4)
    out = ROOT / "bench" / "results" / "keeper_relay.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": "keeper_relay",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "python": platform.python_version(),
        "loop": "uvloop" if args.uvloop else "asyncio",
        "cpus": os.cpu_count(),
        "results": rows,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out.relative_to(ROOT)}")
