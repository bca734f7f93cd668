"""What the drone-side guardrails cost per message (docs/guardrails.md).

Two measurements, each with the guardrails off and on (seed 04's ``outputSchema``, per-request
and per-minute token budgets, a rate limit high enough never to bite, a circuit breaker):

* ``chain``  — the guardrail chain alone (admit → check → settle on one realistic output), per
  call, in microseconds: the pure overhead;
* ``worker`` — one message at a time through a real drone: dispatch published on the in-process
  bus → :class:`~apiary.node.worker.StageWorker` → keeper → ``examples/agents/echo.py`` (a real
  process) → Outcome received; off and on are run in alternating blocks so machine noise hits
  both alike.

Prints a table and writes ``bench/results/guardrails.json``.

    .venv/bin/python bench/guardrails.py [--messages 3000] [--calls 100000] [--out PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from _common import machine_info, percentile, write_result  # noqa: E402

from apiary.bus import Delivery, open_bus  # noqa: E402
from apiary.node.guardrails import GuardrailChain  # noqa: E402
from apiary.node.keeper import Keeper  # noqa: E402
from apiary.node.worker import StageWorker  # noqa: E402
from apiary.waggle import Message, Usage  # noqa: E402
from apiary.waggle.envelope import Dispatch, outcome_subject, stage_subject  # noqa: E402

SEED_04_SCHEMA = {
    "type": "object",
    "properties": {"response": {"type": "string"}, "confidence": {"type": "number"}},
}
GUARDRAILS: dict[str, Any] = {
    "outputSchema": SEED_04_SCHEMA,
    "tokenBudgetPerRequest": 50_000,
    "tokenBudgetPerMinute": 10**12,
    "rateLimitPerMinute": 10**9,
    "circuitBreaker": {"failureThreshold": 5, "resetTimeoutSeconds": 30},
}
PAYLOAD = {"response": "You asked about: guardrails", "confidence": 0.9}
BLOCKS = 6


def summary(latencies: list[float], unit: float) -> dict[str, float]:
    lat = sorted(latencies)
    return {
        "count": len(lat),
        "p50": round(percentile(lat, 50) * unit, 3),
        "p99": round(percentile(lat, 99) * unit, 3),
        "mean": round(sum(lat) / len(lat) * unit, 3) if lat else 0.0,
    }


# ------------------------------------------------------------------------------- the chain


def bench_chain(calls: int) -> dict[str, Any]:
    """Per-call time of admit + check + settle, timed call by call (µs)."""
    output = Message(PAYLOAD, "result")
    output.usage = Usage(120, 40)
    outputs = [output]
    chain = GuardrailChain.build(GUARDRAILS)
    assert chain is not None
    none = GuardrailChain.build({"responseTimeoutSeconds": 30})
    assert none is None
    clock = time.perf_counter
    on: list[float] = []
    off: list[float] = []
    for _ in range(calls):
        t0 = clock()
        if none is not None:  # what the worker does without guardrails: one test
            none.admit()
        off.append(clock() - t0)
        t0 = clock()
        if chain.admit() == 0.0:
            chain.settle(chain.check(outputs, (0, 0)), outputs)
        on.append(clock() - t0)
    return {"off_us": summary(off, 1e6), "on_us": summary(on, 1e6)}


# ------------------------------------------------------------------------------ the worker


async def bench_worker(messages: int) -> dict[str, Any]:
    """Round trip of one dispatch through a real echo drone, guardrails off vs on (ms)."""
    cell = "bench"
    async with open_bus("memory://") as bus:
        arrived: asyncio.Queue[float] = asyncio.Queue()

        async def take(d: Delivery) -> None:
            arrived.put_nowait(time.perf_counter())
            await d.ack()

        await bus.subscribe(outcome_subject(cell, "h"), "bench", take, max_in_flight=16)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", str(ROOT / "examples/agents/echo.py"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        )  # fmt: skip
        keeper = Keeper({"type": "stdin", "format": "waggle"}, name="echo")
        await keeper.attach(proc)
        results: dict[str, list[float]] = {"off": [], "on": []}
        errors = 0
        n = 0
        try:
            per_block = max(1, messages // BLOCKS)
            for block in range(BLOCKS * 2 + 1):
                mode = "on" if block % 2 else "off"
                worker = StageWorker(
                    bus, keeper, cell=cell, hive="h", stage="s", drone="echo",
                    guardrails=GUARDRAILS if mode == "on" else None,
                )  # fmt: skip
                await worker.start()
                for _ in range(per_block if block else per_block // 2):  # block 0 warms up
                    n += 1
                    body = Message(PAYLOAD).to_dict()
                    d = Dispatch(f"d{n}", f"{cell}/s", "h", "s", body)
                    t0 = time.perf_counter()
                    await bus.publish(stage_subject(cell, "h", "s"), d.encode(), msg_id=d.msg_id)
                    t1 = await arrived.get()
                    if block:
                        results[mode].append(t1 - t0)
                await worker.stop()
                if worker.guard is not None:
                    errors += worker.guard.stats.schema_violations
        finally:
            await keeper.stop()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()
    return {
        "off_ms": summary(results["off"], 1e3),
        "on_ms": summary(results["on"], 1e3),
        "schema_violations": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000, help="messages through the drone")
    parser.add_argument("--calls", type=int, default=100_000, help="calls of the chain alone")
    parser.add_argument("--out", type=Path, default=None, help="result file")
    args = parser.parse_args()
    chain = bench_chain(args.calls)
    worker = asyncio.run(bench_worker(args.messages))
    overhead = {
        "chain_p50_us": round(chain["on_us"]["p50"] - chain["off_us"]["p50"], 3),
        "chain_p99_us": round(chain["on_us"]["p99"] - chain["off_us"]["p99"], 3),
        "worker_p50_ms": round(worker["on_ms"]["p50"] - worker["off_ms"]["p50"], 3),
        "worker_p99_ms": round(worker["on_ms"]["p99"] - worker["off_ms"]["p99"], 3),
    }
    print(f"{'measurement':<28}{'off p50':>10}{'off p99':>10}{'on p50':>10}{'on p99':>10}")
    for label, row, unit in (("chain alone (µs/call)", chain, "us"),
                             ("echo drone round trip (ms)", worker, "ms")):  # fmt: skip
        off, on = row[f"off_{unit}"], row[f"on_{unit}"]
        print(f"{label:<28}{off['p50']:>10}{off['p99']:>10}{on['p50']:>10}{on['p99']:>10}")
    print(f"overhead: chain {overhead['chain_p50_us']} µs p50 / {overhead['chain_p99_us']} µs p99;"
          f" through the drone {overhead['worker_p50_ms']} ms p50 / "
          f"{overhead['worker_p99_ms']} ms p99")  # fmt: skip
    report = {
        "machine": machine_info(),
        "guardrails": GUARDRAILS,
        "chain": chain,
        "worker": worker,
        "overhead": overhead,
    }
    path = write_result("guardrails", report, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
