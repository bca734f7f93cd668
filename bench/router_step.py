"""The control plane's own cost per message: the router, journal and status writer, no agents.

``bench/throughput.py`` measures a message end to end through real agent processes, and on a
2-core machine those share the CPU with Apiary; msgs/s there moves with whatever else runs. This
measures what issue 12 budgets (≤ ~50 µs of Apiary CPU per message for 20,000 msgs/s): the same
wiring as apiaryd's embedded mode — SQLite store and journal, the in-process bus, the
SessionDirectory and SessionStatusWriter — with an in-process fake drone that answers each
dispatch at once (decode the Dispatch, publish an Outcome, as node/worker.py does minus the
agent). Sessions run one message at a time each, ``--in-flight`` of them at once, closed loop.

Figures: messages/s and this process's CPU per message (every thread: the journal's and store's
SQLite threads too). Runs against whatever ``apiary`` is importable, so ``PYTHONPATH=<other
checkout>/src`` measures another commit with the same script.

    .venv/bin/python bench/router_step.py --seconds 3 --in-flight 64 --rounds 3 [--loop asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

from _common import LOOPS, machine_info, run_on_loop, write_result

from apiary.bus import Delivery, open_bus
from apiary.journal import open_journal
from apiary.router.service import Router
from apiary.router.sessions import SessionDirectory
from apiary.router.status import SessionStatusWriter
from apiary.store import open_store
from apiary.waggle import Message
from apiary.waggle.envelope import Dispatch, Outcome, outcome_subject, stage_group, stage_subject

PAYLOAD = "hello bees"


def obj(kind: str, cell: str | None, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if cell is not None:
        meta["namespace"] = cell
    return {"apiVersion": "apiary.io/v1", "kind": kind, "metadata": meta, "spec": spec}


async def run(seconds: float, in_flight: int, tmp: Path) -> dict[str, Any]:
    cell, hive, stage = f"rs{secrets.token_hex(3)}", "one", "s"
    async with contextlib.AsyncExitStack() as opened:
        store = await opened.enter_async_context(open_store(f"sqlite:///{tmp}/store.db"))
        journal = await opened.enter_async_context(open_journal(f"sqlite:///{tmp}/journal.db"))
        bus = await opened.enter_async_context(open_bus("memory://"))
        router = Router(journal, bus, SessionDirectory(store))
        status = SessionStatusWriter(store, journal)
        router.on_status = status.update
        await store.create(obj("Cell", None, cell, {}))
        spec = {"pattern": "pipeline", "stages": [{"name": stage, "agentRef": "cat"}]}
        await store.create(obj("Hive", cell, hive, spec))
        out = outcome_subject(cell, hive)

        async def drone(delivery: Delivery) -> None:
            d = Dispatch.decode(delivery.data)
            answer = {"payload": d.message.get("payload"), "type": "result"}
            outcome = Outcome(d.dispatch, d.session, d.hive, d.stage, "fake-0", [answer],
                              latency_ms=0.01, attempt=d.attempt)  # fmt: skip
            await bus.publish(out, outcome.encode(), msg_id=outcome.msg_id)
            await delivery.ack()

        sub = await bus.subscribe(stage_subject(cell, hive, stage), stage_group(cell, hive, stage),
                                  drone, max_in_flight=in_flight * 2)  # fmt: skip
        opened.push_async_callback(sub.drain)
        stop = asyncio.Event()
        routing = asyncio.create_task(router.run(stop))
        names = [f"s{i}" for i in range(in_flight)]
        for name in names:
            await store.create(obj("Session", cell, name, {"hiveRef": hive}))
        counts = dict.fromkeys(names, 0)
        seqs = dict.fromkeys(names, 0)

        async def loop(name: str, until: float) -> None:
            key = f"{cell}/{name}"
            while time.perf_counter() < until:
                sent = await router.submit(cell, name, Message(PAYLOAD), fresh=True)
                while True:
                    entries = await journal.wait(key, seqs[name], 30.0)
                    if not entries:
                        raise RuntimeError(f"{key}: no final within 30 s")
                    seqs[name] = entries[-1].seq or seqs[name]
                    if any(e.parent == sent.id and e.kind == "final" for e in entries):
                        break
                counts[name] += 1

        warm = time.perf_counter() + min(1.0, seconds / 2)
        await asyncio.gather(*(loop(n, warm) for n in names))
        before = sum(counts.values())
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(loop(n, t0 + seconds) for n in names))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        done = sum(counts.values()) - before
        stop.set()
        await asyncio.wait_for(routing, 30)
        await status.flush()  # as apiaryd does, before the store it writes to closes
        return {
            "in_flight": in_flight,
            "messages": done,
            "msgs_per_s": round(done / elapsed, 1),
            "cpu_us_per_msg": round(cpu / max(1, done) * 1e6, 1),
        }


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    for i in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="router-step-") as tmp:
            row = await run(args.seconds, args.in_flight, Path(tmp))
        row["round"] = i
        rows.append(row)
        print(f"  round {i}: {row['msgs_per_s']} msgs/s, {row['cpu_us_per_msg']} µs CPU/msg",
              file=sys.stderr)  # fmt: skip
    return {
        "benchmark": "router_step",
        "machine": machine_info(),
        "seconds": args.seconds,
        "loop": args.loop,
        "rows": rows,
        "median_msgs_per_s": median(r["msgs_per_s"] for r in rows),
        "median_cpu_us_per_msg": median(r["cpu_us_per_msg"] for r in rows),
        "target_cpu_us_per_msg": 50,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0], help="event loop (apiaryd's)")
    args = parser.parse_args()
    report = run_on_loop(measure(args), args.loop)
    print(f"router step: {report['median_msgs_per_s']} msgs/s, "
          f"{report['median_cpu_us_per_msg']} µs CPU per message (median of {args.rounds}; "
          f"issue 12's budget ≈ 50 µs)")  # fmt: skip
    print(f"wrote {write_result('router_step', report, args.out)}")


if __name__ == "__main__":
    main()
