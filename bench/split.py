"""Which split of the message path pays on two cores (issue 12, build point 4).

``bench/throughput.py`` runs everything Apiary does in one process — the API, the router, the
journal's Python, the Queen and the node agent with its relay to the agents — so one GIL holds
all of it while the second core runs the agents and SQLite. This runs the same closed loop
(``throughput.closed_loop``: 256 sessions in flight, one message at a time each, real ``cat``
and SDK echo agents) three ways, alternating, in the same run:

* ``embedded``    the in-process bus, the node agent in this process (what ``apiaryd`` runs);
* ``embedded-apart`` the in-process bus, the node in a child process served that bus over a
                  socket pair (what ``apiaryd --node-process`` runs);
* ``nats``        NATS JetStream, the node agent still in this process;
* ``nats-apart``  NATS JetStream, the node agent as ``apiaryd node`` in a process of its own, as
                  a worker machine runs it: the relay's CPU leaves the control plane's process;
* ``shards-2``    the ceiling of the other split, router shards per session hash each with its
                  own journal writer: two whole embedded stacks in two processes, each with its
                  own store, journal, bus, node and agents and half the sessions in flight,
                  measured over the same window and summed. Real shards would add what this
                  leaves out (the API forwarding to the shard that owns a session, long-poll
                  wake-ups across processes), so no build of them can beat this figure.

The journal is SQLite in every case. Reported per hive: msgs/s, this process's CPU per message
(the control plane and the load generator; for ``shards-2`` both shard processes'), the node
process's when it is apart, and how many of the machine's cores were busy (every process: the
agents, SQLite's threads, anyone else); per mode, what Apiary adds per hop one message at a time
(3 stages, the agent subtracted; ``shards-2`` has none of its own: one message at a time goes
through one shard, which is ``embedded``).

    .venv/bin/python bench/split.py [--seconds 3] [--rounds 2] [--in-flight 256] [--out F]
                                    [--modes embedded,embedded-apart,nats,nats-apart,shards-2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # puts src/ on the path too
from _common import LOOPS, machine_info, run_on_loop, temp_dir, write_result
from keeper_relay import keeper_case

MODES = ("embedded", "embedded-apart", "nats", "nats-apart", "shards-2")
SHARDS = 2
LATENCY = ("added_per_hop_3_stages_p50_ms", "added_per_hop_3_stages_p99_ms", "e2e_1_stage_p50_ms")
"""One message at a time (``throughput.hop_latency``): what Apiary adds per hop, and one stage."""
HIVES = ["cat-r1", "cat-r2", "echo-r2"]


async def one(mode: str, tmp: Path, args: argparse.Namespace, alone: dict[str, Any]) -> Any:
    if mode == "shards-2":
        return await shards(tmp, args)
    cell = f"sp{secrets.token_hex(3)}"
    bus = "memory://"
    if mode.startswith("nats"):
        bus = f"{args.nats}?stream=SPLIT_{cell}&subjects=apiary.{cell}.>"
    return await throughput.apiary_mode(
        tmp / mode, bus, f"sqlite:///{tmp}/{mode}-journal.db", args.seconds, args.in_flight,
        args.latency_messages, alone, HIVES, cell=cell, node_process=mode.endswith("-apart"),
    )  # fmt: skip


async def shards(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    """:data:`SHARDS` whole embedded stacks in processes of their own, started on each hive
    together (each waits for a ``go`` line), their windows' messages summed."""
    argv = [sys.executable, __file__, "--shard-worker", "--seconds", str(args.seconds),
            "--in-flight", str(args.in_flight // SHARDS), "--loop", args.loop]  # fmt: skip
    pipe = asyncio.subprocess.PIPE
    procs = [
        await asyncio.create_subprocess_exec(
            *argv, "--shard-dir", str(tmp / f"shard{i}"), stdin=pipe, stdout=pipe
        )
        for i in range(SHARDS)
    ]

    async def line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
        assert proc.stdout is not None
        raw = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not raw:
            raise RuntimeError(f"shard worker {proc.pid} exited ({await proc.wait()})")
        return dict(json.loads(raw))

    rows = []
    try:
        for hive in HIVES:
            await asyncio.gather(*(line(p) for p in procs))  # each: {"ready": hive}
            for p in procs:
                assert p.stdin is not None
                p.stdin.write(b"go\n")
            got = await asyncio.gather(*(line(p) for p in procs))
            messages = sum(g["messages"] for g in got)
            rows.append({
                "hive": hive, "shards": got, "messages": messages,
                "msgs_per_s": round(sum(g["msgs_per_s"] for g in got), 1),
                "cpu_us_per_msg": round(
                    sum(g["cpu_us_per_msg"] * g["messages"] for g in got) / max(1, messages), 1),
                "machine_cores_busy": round(median(g["machine_cores_busy"] for g in got), 2),
            })  # fmt: skip
            print(f"  {hive}: {rows[-1]['msgs_per_s']} msgs/s over {SHARDS} shards, "
                  f"{rows[-1]['cpu_us_per_msg']} µs CPU/msg", file=sys.stderr)  # fmt: skip
        pids = [pid for p in procs for pid in (await line(p))["drone_pids"]]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.wait()
    return {"drone_pids": pids, "node_pid": None, "throughput": rows, "latency": None}


async def shard_worker(args: argparse.Namespace) -> None:
    """One shard of ``shards-2``: a whole embedded stack; on each hive it says ``ready`` and
    waits for ``go`` on stdin, then runs the closed loop and prints its row (JSON lines)."""
    loop = asyncio.get_running_loop()
    tmp = args.shard_dir
    await asyncio.to_thread(tmp.mkdir, parents=True, exist_ok=True)
    journal, cell = f"sqlite:///{tmp}/journal.db", f"sh{secrets.token_hex(3)}"
    async with throughput.apiary_stack(tmp, "memory://", journal, cell) as ap:
        await throughput.deploy(ap)
        pids = await throughput.drone_pids(ap)
        for hive in HIVES:
            print(json.dumps({"ready": hive}), flush=True)
            await loop.run_in_executor(None, sys.stdin.readline)
            row = await throughput.closed_loop(ap, hive, args.seconds, args.in_flight)
            print(json.dumps(row), flush=True)
        print(json.dumps({"drone_pids": pids}), flush=True)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    alone = await keeper_case("cat", ["cat"], "text", 1, 300)
    runs: list[dict[str, Any]] = []
    latencies: list[dict[str, Any]] = []
    pids: list[int] = []
    modes = args.modes.split(",")
    for i in range(args.rounds):
        for mode in modes:
            with temp_dir("apiary-split-") as tmp:
                print(f"== round {i}: {mode}", file=sys.stderr)
                got = await one(mode, tmp, args, alone)
            pids += got["drone_pids"] + ([got["node_pid"]] if got["node_pid"] else [])
            for row in got["throughput"]:
                runs.append({"round": i, "mode": mode, **row})
            if got["latency"] is not None:
                latencies.append({"round": i, "mode": mode, **got["latency"]})
    summary = []
    for mode in modes:
        for hive in HIVES:
            rows = [r for r in runs if r["mode"] == mode and r["hive"] == hive]
            node = [r["node_cpu_us_per_msg"] for r in rows if "node_cpu_us_per_msg" in r]
            summary.append({
                "mode": mode, "hive": hive,
                "msgs_per_s": median(r["msgs_per_s"] for r in rows),
                "range": [min(r["msgs_per_s"] for r in rows), max(r["msgs_per_s"] for r in rows)],
                "cpu_us_per_msg": median(r["cpu_us_per_msg"] for r in rows),
                "node_cpu_us_per_msg": median(node) if node else None,
                "machine_cores_busy": median(r["machine_cores_busy"] for r in rows),
            })  # fmt: skip
    hop = {
        mode: {k: median(r[k] for r in latencies if r["mode"] == mode) for k in LATENCY}
        for mode in modes
        if any(r["mode"] == mode for r in latencies)
    }
    return {
        "benchmark": "split",
        "machine": machine_info(),
        "seconds": args.seconds,
        "in_flight": args.in_flight,
        "rounds": args.rounds,
        "loop": args.loop,
        "runs": runs,
        "summary": summary,
        "latency": latencies,
        "latency_summary": hop,
        "pids": pids,
    }


def table(report: dict[str, Any]) -> str:
    lines = ["mode            hive      msgs/s (range)          µs CPU/msg here   node apart"
             "   cores busy"]  # fmt: skip
    for r in report["summary"]:
        node = "—" if r["node_cpu_us_per_msg"] is None else f"{r['node_cpu_us_per_msg']:.0f}"
        span = f"({r['range'][0]:.0f}-{r['range'][1]:.0f})"
        lines.append(
            f"{r['mode']:<15} {r['hive']:<9} {r['msgs_per_s']:>7.0f} {span:<15}"
            f" {r['cpu_us_per_msg']:>10.0f}        {node:>6}   {r['machine_cores_busy']:>10.2f}"
        )
    lines.append("mode            added per hop p50 / p99 ms (3 stages)   1 stage p50 ms")
    for mode, h in report["latency_summary"].items():
        added = f"{h[LATENCY[0]]:.2f} / {h[LATENCY[1]]:.2f}"
        lines.append(f"{mode:<15} {added:<39} {h[LATENCY[2]]:.2f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--in-flight", type=int, default=256)
    parser.add_argument("--latency-messages", type=int, default=50)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0], help="event loop (apiaryd's)")
    parser.add_argument("--shard-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shard-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.shard_worker:
        run_on_loop(shard_worker(args), args.loop)
        return
    unknown = sorted(set(args.modes.split(",")) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {', '.join(unknown)} (choose from {', '.join(MODES)})")
    report = run_on_loop(measure(args), args.loop)
    print(table(report))
    print(f"wrote {write_result('split', report, args.out)}")


if __name__ == "__main__":
    main()
