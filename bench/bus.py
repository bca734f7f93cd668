"""Message bus throughput and latency, with raw nats-py measured beside it in the same run.

Scenarios (DESIGN §8: embedded ≥ 20,000 msgs/s end to end, so the bus itself should do ≫ 100k;
NATS mode ≥ half of raw nats-py request/reply):

* ``memory``         — in-process bus: publish → deliver → ack, one subscriber, 64 in flight;
* ``nats``           — JetStream bus: ``publish_many`` batches, two members of one group;
* ``raw-reqrep``     — bare nats-py core request/reply (sequential, then 64 concurrent);
* ``raw-js``         — bare nats-py JetStream: ``publish_async`` batches + ``fetch`` + ``ack``.

Latency rows send one message at a time and time publish → handler (p50/p99, milliseconds).
Prints a table and writes ``bench/results/bus.json``.

    .venv/bin/python bench/bus.py [--messages 100000] [--nats nats://127.0.0.1:4222]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from apiary.bus import Bus, Delivery, open_bus  # noqa: E402

Row = dict[str, Any]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


async def bus_throughput(
    bus: Bus, subject: str, total: int, members: int, batch: int, in_flight: int
) -> float:
    done = asyncio.Event()
    count = 0

    async def handler(d: Delivery) -> None:
        nonlocal count
        await d.ack()
        count += 1
        if count == total:
            done.set()

    subs = [
        await bus.subscribe(subject, "bench", handler, max_in_flight=in_flight)
        for _ in range(members)
    ]
    start = time.perf_counter()
    payload = b"x" * 100
    if batch <= 1:
        for _ in range(total):
            await bus.publish(subject, payload)
    else:
        for i in range(0, total, batch):
            await bus.publish_many([(subject, payload)] * min(batch, total - i))
    await asyncio.wait_for(done.wait(), 300)
    elapsed = time.perf_counter() - start
    for sub in subs:
        await sub.drain()
    return total / elapsed


async def bus_latency(bus: Bus, subject: str, total: int) -> list[float]:
    got: asyncio.Future[float] | None = None

    async def handler(d: Delivery) -> None:
        await d.ack()
        if got is not None and not got.done():
            got.set_result(time.perf_counter())

    sub = await bus.subscribe(subject, "lat", handler)
    latencies = []
    loop = asyncio.get_running_loop()
    for _ in range(total):
        got = loop.create_future()
        t0 = time.perf_counter()
        await bus.publish(subject, b"ping")
        latencies.append(await asyncio.wait_for(got, 10) - t0)
    await sub.drain()
    return latencies


async def timed(total: int, send: Callable[[], Awaitable[None]], concurrency: int) -> Row:
    latencies: list[float] = []
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            t0 = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {
        "msgs_per_s": total / elapsed,
        "p50_ms": pct(latencies, 0.5),
        "p99_ms": pct(latencies, 0.99),
    }


async def raw_reqrep(url: str, total: int) -> list[Row]:
    import nats

    nc = await nats.connect(url)
    subject = f"bench.rr.{secrets.token_hex(4)}"

    async def respond(msg: Any) -> None:
        await msg.respond(msg.data)

    await nc.subscribe(subject, cb=respond)
    await nc.flush()

    async def send() -> None:
        await nc.request(subject, b"x" * 100, timeout=10)

    rows = []
    for concurrency in (1, 64):
        row = await timed(total if concurrency > 1 else total // 4, send, concurrency)
        row["scenario"] = f"raw-reqrep c={concurrency}"
        rows.append(row)
    await nc.close()
    return rows


async def raw_jetstream(url: str, total: int, batch: int) -> Row:
    import nats

    nc = await nats.connect(url)
    js = nc.jetstream()
    tag = secrets.token_hex(4)
    stream, subject = f"BENCHRAW_{tag}", f"benchraw{tag}.x"
    await js.add_stream(name=stream, subjects=[f"benchraw{tag}.>"])
    try:
        psub = await js.pull_subscribe(subject, durable="raw", stream=stream)
        done = 0

        async def consume() -> None:
            nonlocal done
            while done < total:
                try:
                    msgs = await psub.fetch(batch=256, timeout=1)
                except TimeoutError:
                    continue
                for m in msgs:
                    await m.ack()
                done += len(msgs)

        start = time.perf_counter()
        consumer = asyncio.create_task(consume())
        for i in range(0, total, batch):
            futures = [
                await js.publish_async(subject, b"x" * 100) for _ in range(min(batch, total - i))
            ]
            await asyncio.gather(*futures)
        await asyncio.wait_for(consumer, 300)
        elapsed = time.perf_counter() - start
    finally:
        await js.delete_stream(stream)
        await nc.close()
    return {"scenario": "raw-js publish+pull", "msgs_per_s": total / elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=200_000, help="memory-bus messages")
    parser.add_argument("--nats-messages", type=int, default=50_000)
    parser.add_argument("--latency-messages", type=int, default=3_000)
    parser.add_argument(
        "--nats", default=os.environ.get("APIARY_TEST_NATS", "nats://127.0.0.1:4222")
    )
    args, _ = parser.parse_known_args()
    rows: list[Row] = []

    async with open_bus("memory://") as mem:
        rate = await bus_throughput(mem, "apiary.bench.in", args.messages, 1, 1, 64)
        lat = await bus_latency(mem, "apiary.bench.lat", args.latency_messages)
    rows.append(
        {
            "scenario": "memory bus",
            "msgs_per_s": rate,
            "p50_ms": pct(lat, 0.5),
            "p99_ms": pct(lat, 0.99),
        }
    )

    tag = secrets.token_hex(4)
    url = f"{args.nats}?stream=BENCH_{tag}&subjects=bench{tag}.>"
    try:
        nbus = open_bus(url)
        await nbus.open()
    except Exception as exc:
        print(f"NATS not reachable at {args.nats} ({exc}); NATS rows skipped", file=sys.stderr)
        nbus = None
    if nbus is not None:
        try:
            rate = await bus_throughput(nbus, f"bench{tag}.in", args.nats_messages, 2, 500, 256)
            lat = await bus_latency(nbus, f"bench{tag}.lat", args.latency_messages)
            rows.append(
                {
                    "scenario": "nats bus (JetStream)",
                    "msgs_per_s": rate,
                    "p50_ms": pct(lat, 0.5),
                    "p99_ms": pct(lat, 0.99),
                }
            )
        finally:
            from apiary.bus.jetstream import JetStreamBus

            assert isinstance(nbus, JetStreamBus)
            await nbus.delete_stream()
            await nbus.close()
        rows += await raw_reqrep(args.nats, args.nats_messages // 2)
        rows.append(await raw_jetstream(args.nats, args.nats_messages, 500))

    by = {r["scenario"]: r for r in rows}
    if "nats bus (JetStream)" in by and "raw-reqrep c=64" in by:
        ratio = by["nats bus (JetStream)"]["msgs_per_s"] / by["raw-reqrep c=64"]["msgs_per_s"]
        rows.append({"scenario": "ratio nats bus / raw req-rep c=64", "ratio": ratio})

    print(f"{'scenario':38} {'msgs/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        if "ratio" in r:
            print(f"{r['scenario']:38} {r['ratio']:>10.2f}")
            continue
        p50 = f"{r['p50_ms']:.3f}" if "p50_ms" in r else "-"
        p99 = f"{r['p99_ms']:.3f}" if "p99_ms" in r else "-"
        print(f"{r['scenario']:38} {r['msgs_per_s']:>10,.0f} {p50:>8} {p99:>8}")

    out = ROOT / "bench" / "results" / "bus.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "benchmark": "bus",
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "messages": {"memory": args.messages, "nats": args.nats_messages},
                "rows": rows,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
