"""The floor for Apiary's NATS mode: a raw nats-py request/reply loop, no JetStream, no Apiary.

A responder that answers every request with its payload (the echo agent's work) and a requester
keeping ``concurrency`` requests outstanding — core NATS, at-most-once, no acks or persistence, so
nothing a durable bus does can beat it. DESIGN §8 asks Apiary with NATS for at least half of it.
``bench/throughput.py`` calls :func:`reqrep`; run alone it prints its figures:

    .venv/bin/python bench/nats_floor.py [--url nats://127.0.0.1:4222] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from typing import Any

import nats

PAYLOAD = b"hello from the bench"


async def reqrep(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """Requests/s and round-trip p50/p99 with ``concurrency`` requests in flight for ``seconds``.

    Responder and requester are two connections in this process, like the router and the node in
    the Apiary figures it is compared with. Raises ``OSError``-like errors when NATS is absent.
    """
    responder = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    requester = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    subject = f"benchfloor.{secrets.token_hex(4)}"
    try:

        async def respond(msg: Any) -> None:
            await msg.respond(msg.data)

        await responder.subscribe(subject, cb=respond)
        await responder.flush()
        latencies: list[float] = []
        for _ in range(200):  # warm the connections and the inbox subscription
            await requester.request(subject, PAYLOAD, timeout=5)
        end = time.perf_counter() + seconds

        async def loop() -> None:
            clock = time.perf_counter
            while clock() < end:
                t0 = clock()
                reply = await requester.request(subject, PAYLOAD, timeout=10)
                if reply.data != PAYLOAD:
                    raise RuntimeError(f"wrong reply {reply.data!r}")
                latencies.append(clock() - t0)

        t0 = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    finally:
        await requester.close()
        await responder.close()
    latencies.sort()
    return {
        "concurrency": concurrency,
        "messages": len(latencies),
        "msgs_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(latencies[len(latencies) // 2] * 1000, 3),
        "p99_ms": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000, 3),
    }


async def _main(url: str, seconds: float) -> list[dict[str, Any]]:
    return [await reqrep(url, seconds, c) for c in (1, 64, 256)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args.url, args.seconds)), indent=2))
