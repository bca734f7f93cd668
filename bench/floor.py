"""The floor under one hop: what the durable contract costs in plain Python, no Apiary (issue 12).

Issue 12 asks for 20,000 one-hop messages a second on two cores that also run the agents, or
the figure and why it is the limit. ``bench/throughput.py`` says what Apiary does; this says
what the least a CPython program can do while keeping the same promises, so the distance
between the two is the part a redesign could still win, and the floor itself is the part it
cannot. The same closed loop (``--in-flight`` sessions, one message at a time each) through the
same agent (``/bin/cat``, one line in, one line out), alternating, same run:

* ``pipelined`` a line to the agent process and its answer back, one asyncio future per message
               (a task per session, one reader task matching answers to futures), as many lines
               in the pipe at once as sessions wait. No journal.
* ``relay``    the same, but the agent holds one message at a time, as Apiary's keeper holds a
               text agent (``interface.concurrency: 1``): the next line is written when the
               answer to the last is read. What handing a message to a process costs.
* ``durable``  ``relay`` plus what DESIGN §6 and §7 promise: the input recorded before it is
               forwarded and the output recorded before it is answered, each one row of an
               entries table and the session's row updated (its sequence and a small state),
               committed in SQLite WAL at ``synchronous=NORMAL`` as Apiary's journal does. One
               writer thread commits everything queued in one transaction (group commit) and
               wakes the batch's futures with one ``call_soon_threadsafe``.
* ``apiary``   Apiary's embedded mode on the same hive (``throughput.apiary_mode``, ``cat-r1``,
               or ``cat-r2`` with ``--replicas 2``, as the plain modes then run two ``cat``):
               router, pattern engine, journal, status, in-process bus, node and keeper relay.
* ``celery``   the named peer, Celery on the local Redis (``bench/celery_peer.py``, the best of
               its one-task rows), so every figure has a same-run ratio: this VM's speed drifts
               by a factor of 2-4 between days, and only the ratios carry over.

Nothing here is Apiary's: no envelopes, no routing, no schema, no status, no bus, no
guardrails, no keeper. Reported per mode: msgs/s, this process's CPU per message (every thread),
and the whole machine's (the agent process too) with the cores busy.

    .venv/bin/python bench/floor.py [--seconds 3] [--rounds 3] [--in-flight 64] [--replicas 1]
                         [--modes pipelined,relay,durable,apiary,celery] [--redis URL] [--out F]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # puts src/ on the path too
from _common import LOOPS, Window, machine_info, run_on_loop, temp_dir, write_result

MODES = ("pipelined", "relay", "durable", "apiary", "celery")
FIGURES = ("msgs_per_s", "cpu_us_per_msg", "machine_cpu_us_per_msg", "machine_cores_busy",
           "steps_per_transaction")  # fmt: skip
STATE = b'{"stage":0,"open":{},"done":[]}'
"""A session's state row. Apiary's is ≈ 2 KB for a one-stage pipeline (its ``done`` list), which
costs SQLite ≈ 1-2 µs more per step (docs/benchmarks.md, "Deltas instead of a state snapshot")."""


class Cat:
    """``/bin/cat`` over pipes: a line per message, answers matched to futures in order;
    ``one_at_a_time``: the next line waits for the answer to the last."""

    def __init__(self, proc: asyncio.subprocess.Process, one_at_a_time: bool) -> None:
        self.proc = proc
        self.turn = asyncio.Lock() if one_at_a_time else None
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            fut = self.waiting.pop(line.split(b" ", 1)[0], None)
            if fut is not None and not fut.done():
                fut.set_result(line)

    async def send(self, key: bytes, body: bytes) -> bytes:
        if self.turn is None:
            return await self._send(key, body)
        async with self.turn:
            return await self._send(key, body)

    async def _send(self, key: bytes, body: bytes) -> bytes:
        assert self.proc.stdin is not None
        fut = asyncio.get_running_loop().create_future()
        self.waiting[key] = fut
        self.proc.stdin.write(key + b" " + body + b"\n")
        await self.proc.stdin.drain()
        return await fut


@contextlib.asynccontextmanager
async def cat(one_at_a_time: bool) -> AsyncIterator[Cat]:
    pipe = asyncio.subprocess.PIPE
    proc = await asyncio.create_subprocess_exec("cat", stdin=pipe, stdout=pipe)
    agent = Cat(proc, one_at_a_time)
    try:
        yield agent
    finally:
        assert agent.proc.stdin is not None
        agent.proc.stdin.close()
        await agent.proc.wait()
        await agent.reader


Row = tuple[str, int, str, bytes]


class GroupCommit:
    """One SQLite writer thread: every step queued meanwhile in one WAL transaction."""

    def __init__(self, path: Path) -> None:
        self.loop = asyncio.get_running_loop()
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute(
            "CREATE TABLE entries (session TEXT, seq INTEGER, kind TEXT, body BLOB,"
            " PRIMARY KEY (session, seq))"
        )
        self.db.execute("CREATE TABLE sessions (name TEXT PRIMARY KEY, seq INTEGER, state BLOB)")
        self.queue: queue.SimpleQueue[tuple[Row, asyncio.Future[None]] | None] = queue.SimpleQueue()
        self.batches = self.steps = 0
        self.thread = threading.Thread(target=self._write, name="floor-writer", daemon=True)
        self.thread.start()

    def add_sessions(self, names: list[str]) -> None:
        self.db.executemany("INSERT INTO sessions VALUES (?, 0, ?)", [(n, STATE) for n in names])

    def _write(self) -> None:
        stop = False
        while not stop:
            batch: list[tuple[Row, asyncio.Future[None]]] = []
            item = self.queue.get()
            while item is not None:
                batch.append(item)
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
            else:
                stop = True
            if not batch:
                continue
            rows = [row for row, _ in batch]
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?)", rows)
            self.db.executemany(
                "UPDATE sessions SET seq = ?, state = ? WHERE name = ?",
                [(seq, STATE, session) for session, seq, _, _ in rows],
            )
            self.db.execute("COMMIT")
            self.batches += 1
            self.steps += len(batch)
            self.loop.call_soon_threadsafe(_wake, [fut for _, fut in batch])

    async def commit(self, row: Row) -> None:
        fut = self.loop.create_future()
        self.queue.put((row, fut))
        await fut

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self.db.close()


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


Step = Callable[[str, int], Awaitable[None]]


async def closed_loop(step: Step, names: list[str], seconds: float) -> dict[str, Any]:
    """Every session sends its next message when its last is answered, for ``seconds``."""
    seqs = dict.fromkeys(names, 0)
    done = 0

    async def run(name: str, until: float, count: bool) -> None:
        nonlocal done
        while time.perf_counter() < until:
            await step(name, seqs[name])
            seqs[name] += 2
            done += count

    await asyncio.gather(
        *(run(n, time.perf_counter() + min(1.0, seconds / 2), False) for n in names)
    )
    window = Window.start()
    await asyncio.gather(*(run(n, window.t0 + seconds, True) for n in names))
    return {"messages": done, **window.figures(done)}


async def plain(mode: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    names = [f"s{i}" for i in range(args.in_flight)]
    async with contextlib.AsyncExitStack() as opened:
        agents = [
            await opened.enter_async_context(cat(one_at_a_time=mode != "pipelined"))
            for _ in range(args.replicas)
        ]
        by_session = {name: agents[i % len(agents)] for i, name in enumerate(names)}
        pids = {"agent_pids": [a.proc.pid for a in agents]}
        if mode in ("pipelined", "relay"):

            async def step(name: str, seq: int) -> None:
                await by_session[name].send(f"{name}.{seq}".encode(), b"x")

            return {**await closed_loop(step, names, args.seconds), **pids}

        journal = GroupCommit(tmp / "floor.db")
        journal.add_sessions(names)

        async def durable(name: str, seq: int) -> None:
            await journal.commit((name, seq, "input", b"x"))  # recorded before it is forwarded
            answer = await by_session[name].send(f"{name}.{seq}".encode(), b"x")
            await journal.commit((name, seq + 1, "output", answer))  # before it is answered

        try:
            row = await closed_loop(durable, names, args.seconds)
        finally:
            await asyncio.to_thread(journal.close)
        row["steps_committed"] = journal.steps  # the warm-up's too: two per message
        row["steps_per_transaction"] = round(journal.steps / max(1, journal.batches), 1)
        return {**row, **pids}


async def apiary(tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    alone = {"p50_ms": 0.0, "p99_ms": 0.0}  # the hop latency it also measures is not used here
    out = await throughput.apiary_mode(
        tmp, "memory://", f"sqlite:///{tmp}/journal.db", args.seconds, args.in_flight, 20,
        alone, [f"cat-r{args.replicas}"],
    )  # fmt: skip
    keys = ("messages", "msgs_per_s", "cpu_us_per_msg", "machine_cores_busy",
            "machine_cpu_us_per_msg")  # fmt: skip
    return {k: out["throughput"][0][k] for k in keys}


async def celery(args: argparse.Namespace) -> dict[str, Any]:
    import celery_peer

    rows = await asyncio.to_thread(celery_peer.run_peer, args.seconds, args.in_flight, args.redis)
    return {"msgs_per_s": max(r["msgs_per_s"] for r in rows if r["hops"] == 1), "rows": rows}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {m: [] for m in args.modes}
    for i in range(args.rounds):
        for mode in args.modes:
            with temp_dir(f"floor-{mode}-") as tmp:
                if mode == "celery":
                    row = await celery(args)
                elif mode == "apiary":
                    row = await apiary(tmp, args)
                else:
                    row = await plain(mode, tmp, args)
            rows[mode].append(row)
            print(f"  round {i} {mode}: {row['msgs_per_s']} msgs/s, "
                  f"{row.get('cpu_us_per_msg', '-')} µs CPU/msg", file=sys.stderr)  # fmt: skip
    summary = {
        mode: {k: median(r[k] for r in rs) for k in FIGURES if k in rs[0]}
        for mode, rs in rows.items()
    }
    ratios = {
        f"{a}_over_{b}": round(summary[a]["msgs_per_s"] / summary[b]["msgs_per_s"], 3)
        for a, b in (("durable", "celery"), ("apiary", "celery"), ("apiary", "durable"))
        if a in summary and b in summary and summary[b]["msgs_per_s"]
    }
    if "durable" in summary:  # issue 12's one-hop target against the floor
        ratios["target_20000_over_durable"] = round(20_000 / summary["durable"]["msgs_per_s"], 2)
    return {
        "machine": machine_info(),
        "seconds": args.seconds,
        "in_flight": args.in_flight,
        "loop": args.loop,
        "rounds": rows,
        "median": summary,
        "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--replicas", type=int, choices=(1, 2), default=1,
                        help="agent processes (apiary: hive cat-r1 or cat-r2)")  # fmt: skip
    parser.add_argument("--modes", type=lambda s: s.split(","), default=list(MODES))
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/14", help="celery's broker")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--loop", choices=LOOPS, default=LOOPS[0], help="event loop (apiaryd's)")
    args = parser.parse_args()
    unknown = set(args.modes) - set(MODES)
    if unknown:
        parser.error(
            f"--modes: unknown {', '.join(sorted(unknown))} (choose from {', '.join(MODES)})"
        )
    report = run_on_loop(measure(args), args.loop)
    print(f"{'mode':<8} {'msgs/s':>9} {'µs CPU/msg':>11} {'machine µs/msg':>15} {'cores busy':>11}")
    for mode, m in report["median"].items():
        if "cpu_us_per_msg" not in m:  # the peer: many processes, msgs/s only
            print(f"{mode:<8} {m['msgs_per_s']:>9,.0f}")
            continue
        print(f"{mode:<8} {m['msgs_per_s']:>9,.0f} {m['cpu_us_per_msg']:>11,.1f} "
              f"{m['machine_cpu_us_per_msg']:>15,.1f} {m['machine_cores_busy']:>11}")  # fmt: skip
    for name, ratio in report["ratios"].items():
        print(f"{name}: {ratio}")
    print(f"wrote {write_result('floor', report, args.out)}")


if __name__ == "__main__":
    main()
