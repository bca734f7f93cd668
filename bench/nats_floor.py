"""The floor for Apiary's NATS mode: a raw nats-py request/reply loop, no JetStream, no Apiary.

A responder that answers every request with its payload (the echo agent's work) and a requester
keeping ``concurrency`` requests outstanding — core NATS, at-most-once, no acks or persistence, so
nothing a durable bus does can beat it. DESIGN §8 asks Apiary with NATS for at least half of it.

:func:`js_reqrep` is the same loop over JetStream with bare nats-py — what one Apiary hop asks of
the bus and nothing more: the request and the reply each a durable publish (waiting for its
PubAck), a pull delivery (``fetch`` in batches) and an ack. It is the floor a durable bus cannot
beat, to read the ratio to :func:`reqrep` by. ``bench/throughput.py`` calls :func:`reqrep`,
``bench/nats_mode.py`` both; run alone it prints its figures:

    .venv/bin/python bench/nats_floor.py [--url nats://127.0.0.1:4222] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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


async def js_reqrep(url: str, seconds: float, concurrency: int) -> dict[str, Any]:
    """:func:`reqrep` over JetStream (a file stream of its own, deleted afterwards).

    Requester: ``publish_async`` the request, await its PubAck, await the reply. Responder: one
    pull consumer ``fetch``-ing up to ``concurrency`` requests at a time, replies published
    together (``publish_async``, the PubAcks gathered), then each request acked. The requester's
    own pull consumer fetches the replies in batches, acks them and wakes the waiting loop.
    """
    requester = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    responder = await nats.connect(url, connect_timeout=2, max_reconnect_attempts=0)
    rjs, sjs = requester.jetstream(), responder.jetstream()
    tag = secrets.token_hex(4)
    stream, req, rep = f"FLOOR_{tag}", f"floor{tag}.req", f"floor{tag}.rep"
    await rjs.add_stream(name=stream, subjects=[f"floor{tag}.>"])
    loop = asyncio.get_running_loop()
    waiting: dict[str, asyncio.Future[bytes]] = {}
    latencies: list[float] = []
    stopping = False
    try:
        req_sub = await sjs.pull_subscribe(req, durable="req", stream=stream)
        rep_sub = await rjs.pull_subscribe(rep, durable="rep", stream=stream)

        async def respond() -> None:
            while not stopping:
                try:
                    msgs = await req_sub.fetch(batch=concurrency, timeout=0.5)
                except TimeoutError:
                    continue
                acks = [
                    await sjs.publish_async(rep, m.data, headers={"id": m.headers["id"]})
                    for m in msgs
                ]
                await asyncio.gather(*acks)
                for m in msgs:
                    await m.ack()

        async def collect() -> None:
            while not stopping:
                try:
                    msgs = await rep_sub.fetch(batch=concurrency, timeout=0.5)
                except TimeoutError:
                    continue
                for m in msgs:
                    await m.ack()
                    waiter = waiting.pop(m.headers["id"], None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(m.data)

        async def one() -> float:
            ident = secrets.token_hex(8)
            got = waiting[ident] = loop.create_future()
            t0 = time.perf_counter()
            await (await rjs.publish_async(req, PAYLOAD, headers={"id": ident}))
            data = await asyncio.wait_for(got, 10)
            if data != PAYLOAD:
                raise RuntimeError(f"wrong reply {data!r}")
            return time.perf_counter() - t0

        helpers = [asyncio.create_task(respond()), asyncio.create_task(collect())]
        for _ in range(100):  # warm both consumers
            await one()
        end = time.perf_counter() + seconds

        async def run() -> None:
            while time.perf_counter() < end:
                latencies.append(await one())

        t0 = time.perf_counter()
        await asyncio.gather(*(run() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
        stopping = True
        await asyncio.gather(*helpers)
    finally:
        with contextlib.suppress(Exception):
            await rjs.delete_stream(stream)
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


async def _main(url: str, seconds: float) -> dict[str, list[dict[str, Any]]]:
    return {
        "reqrep": [await reqrep(url, seconds, c) for c in (1, 64, 256)],
        "js_reqrep": [await js_reqrep(url, seconds, c) for c in (1, 64, 256)],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(_main(args.url, args.seconds)), indent=2))
