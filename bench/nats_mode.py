"""Apiary's NATS mode beside its floors, alternating in one process (DESIGN §8: ≥ ½ raw nats-py).

``bench/throughput.py`` measures NATS mode once, then raw nats-py once, each for a few seconds;
on a shared 2-core machine the load moves between the two. This runs, round after round in one
process, the same closed loop through the same kind of stack:

* **apiary-nats** — ``throughput.py``'s Apiary (SQLite store and journal, the API, the Queen, a
  node with a real ``cat`` drone) on a JetStream stream of its own, hive ``cat-r1``;
* **apiary-embedded** — the same stack on the in-process bus (what NATS mode can at best reach:
  the router, journal and node work is the same, only the bus differs);
* **raw-reqrep** — bare nats-py core request/reply (``nats_floor.reqrep``): no persistence;
* **raw-js-reqrep** — bare nats-py JetStream request/reply (``nats_floor.js_reqrep``): the same
  bus work as one Apiary hop (two durable publishes, two pull deliveries, two acks), nothing else.

Every figure is a closed loop with ``--in-flight`` outstanding for ``--seconds``; the median over
``--rounds`` is reported with the spread, with this process's CPU per message and the load
average. Writes ``bench/results/nats_mode.json``.

    .venv/bin/python bench/nats_mode.py [--seconds 3] [--rounds 3] [--in-flight 256]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "bench"), str(ROOT)]

import nats_floor  # noqa: E402
import throughput as tp  # noqa: E402
from _common import machine_info, temp_dir, write_result  # noqa: E402


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tp.HIVES = {"cat-r1": tp.HIVES["cat-r1"]}  # deploy only the hive measured here
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with temp_dir("apiary-natsmode-") as tmp, contextlib.ExitStack():
        async with contextlib.AsyncExitStack() as stack:
            stacks: dict[str, tp.Apiary] = {}
            if "apiary-nats" in modes:
                cell = f"nm{secrets.token_hex(3)}"
                url = f"{args.nats}?stream=NMBENCH_{cell}&subjects=apiary.{cell}.>"
                (tmp / "nats").mkdir()
                stacks["apiary-nats"] = await stack.enter_async_context(
                    tp.apiary_stack(tmp / "nats", url, f"sqlite:///{tmp}/nats-j.db", cell)
                )
            if "apiary-embedded" in modes:
                (tmp / "emb").mkdir()
                stacks["apiary-embedded"] = await stack.enter_async_context(
                    tp.apiary_stack(tmp / "emb", "memory://", f"sqlite:///{tmp}/emb-j.db")
                )
            for ap in stacks.values():
                await tp.deploy(ap)
            for r in range(args.rounds):
                order = modes if r % 2 == 0 else modes[::-1]
                for mode in order:
                    row = await one(mode, stacks, args)
                    row["load1"] = os.getloadavg()[0]
                    rows[mode].append(row)
                    print(
                        f"round {r + 1} {mode:16} {row['msgs_per_s']:>9,.0f} msgs/s "
                        f"{row.get('cpu_us_per_msg', 0):>7,.0f} µs CPU/msg "
                        f"load {row['load1']:.2f}",
                        file=sys.stderr,
                    )
    summary = {}
    for mode, got in rows.items():
        rates = [g["msgs_per_s"] for g in got]
        cpus = [g["cpu_us_per_msg"] for g in got if "cpu_us_per_msg" in g]
        summary[mode] = {
            "median_msgs_per_s": round(statistics.median(rates), 1),
            "min": min(rates),
            "max": max(rates),
            "median_cpu_us_per_msg": round(statistics.median(cpus), 1) if cpus else None,
        }
    raw = summary.get("raw-reqrep", {}).get("median_msgs_per_s")
    for s in summary.values():
        if raw:
            s["over_raw_reqrep"] = round(s["median_msgs_per_s"] / raw, 3)
    return {
        "machine": machine_info(),
        "seconds": args.seconds,
        "rounds": args.rounds,
        "in_flight": args.in_flight,
        "summary": summary,
        "rounds_detail": rows,
    }


async def one(mode: str, stacks: dict[str, tp.Apiary], args: argparse.Namespace) -> dict[str, Any]:
    if mode in stacks:
        return await tp.closed_loop(stacks[mode], "cat-r1", args.seconds, args.in_flight)
    cpu0 = time.process_time()
    if mode == "raw-reqrep":
        row = await nats_floor.reqrep(args.nats, args.seconds, args.in_flight)
    elif mode == "raw-js-reqrep":
        row = await nats_floor.js_reqrep(args.nats, args.seconds, args.in_flight)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    row["cpu_us_per_msg"] = round((time.process_time() - cpu0) / max(1, row["messages"]) * 1e6, 1)
    return row


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument(
        "--modes", default="apiary-nats,raw-reqrep,raw-js-reqrep,apiary-embedded",
        help="comma-separated; alternated each round",
    )  # fmt: skip
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    report = asyncio.run(main(args))
    print(f"{'mode':18} {'median msgs/s':>14} {'min-max':>16} {'CPU µs/msg':>11} {'÷ raw':>7}")
    for mode, s in report["summary"].items():
        spread = f"{s['min']:,.0f}-{s['max']:,.0f}"
        cpu = s["median_cpu_us_per_msg"]
        print(
            f"{mode:18} {s['median_msgs_per_s']:>14,.0f} {spread:>16} "
            f"{cpu if cpu is not None else '-':>11} {s.get('over_raw_reqrep', '-'):>7}"
        )
    print(f"load average at the end: {os.getloadavg()}")
    print(f"wrote {write_result('nats_mode', report, args.out)}")
