"""The fault test: apiaryd is killed with SIGKILL five times while 2,000 sessions run through a
3-stage pipeline (2 replicas a stage), and restarted at once on the same data dir.

The client is honest about acceptance (:mod:`tests.e2e.crashkit`): a session counts as accepted
once its input got a 202; it retries with the same session name and message id until then.
Afterwards every session must have exactly one final with the right payload, one input, and
each stage's output once — an output recorded twice would mean a redelivered message was
routed twice; one sent twice to an agent but recorded once never reaches the client and is not
counted here. Kill moments come from a seeded RNG (``APIARY_CRASH_SEED``, printed) so a failing
run can be repeated. Embedded (SQLite + in-process bus + local node) and PostgreSQL + NATS
JetStream (a shorter ack wait, so work held by the dead process comes back in seconds, not 30).
"""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from services import free_port, require_nats

from .cluster import Apiaryd, agent_processes, n_ready, new_cell, wait_drones
from .conftest import scaled_apiaryd
from .crashkit import Answer, CrashTolerantClient
from .test_sessions_scale import pipeline

SESSIONS = int(os.environ.get("APIARY_CRASH_SESSIONS", "2000"))
KILLS = 5
BOUND = 170.0
"""Seconds the run (sessions, kills, restarts) may take: the acceptance says < 3 minutes."""
CONCURRENCY = 64
ACK_WAIT = 3.0
"""JetStream ack wait (seconds) in the NATS variant: how long a message delivered to the killed
process stays invisible before it is redelivered."""


@dataclass
class Crash:
    at_done: int
    killed: float
    ready: float = 0.0
    resumed: float = 0.0

    @property
    def restart(self) -> float:
        return self.ready - self.killed

    @property
    def recover(self) -> float:
        return self.resumed - self.killed


@dataclass
class Run:
    answers: list[Answer] = field(default_factory=list)
    crashes: list[Crash] = field(default_factory=list)
    done: int = 0
    progress: asyncio.Event = field(default_factory=asyncio.Event)


async def killer(server: Apiaryd, run: Run, rng: random.Random, finished: asyncio.Event) -> None:
    """SIGKILL at random points of progress (and a random delay past them), restart at once;
    wait until finals flow again before arming the next kill, so each recovery is measured."""
    marks = sorted(rng.sample(range(SESSIONS // 20, SESSIONS * 9 // 10), KILLS))
    delays = [rng.uniform(0.0, 0.25) for _ in marks]
    print(f"kill after sessions done: {marks}, then +{[round(d, 3) for d in delays]}s")
    for mark, delay in zip(marks, delays, strict=True):
        while run.done < mark and not finished.is_set():
            run.progress.clear()
            await run.progress.wait()
        if finished.is_set():
            return
        await asyncio.sleep(delay)
        crash = Crash(run.done, time.monotonic())
        server.kill()
        run.crashes.append(crash)
        await asyncio.to_thread(server.start, 60.0)
        crash.ready = time.monotonic()
        seen = run.done
        while run.done == seen and not finished.is_set():
            run.progress.clear()
            await run.progress.wait()
        crash.resumed = time.monotonic()


async def drive(server: Apiaryd, cell: str, seed: int) -> tuple[Run, CrashTolerantClient, float]:
    client = CrashTolerantClient(lambda: server.url, server.token, cell,
                                 concurrency=CONCURRENCY, give_up_after=BOUND)  # fmt: skip
    run = Run()
    gate = asyncio.Semaphore(CONCURRENCY)
    finished = asyncio.Event()

    async def one(i: int) -> None:
        async with gate:
            answer = await client.run_one(f"s{i}", "p", f"in-{i}", f"m{i}")
        run.answers.append(answer)
        run.done += 1
        run.progress.set()

    t0 = time.monotonic()
    kills = asyncio.ensure_future(killer(server, run, random.Random(seed), finished))
    try:
        await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(SESSIONS))), BOUND)
    except TimeoutError:
        stuck = await describe_stuck(client, run)
        await client.aclose()
        pytest.fail(f"{SESSIONS - run.done} sessions without a final after {BOUND}s "
                    f"(kills: {[(k.at_done, round(k.restart, 2)) for k in run.crashes]}); "
                    f"some of them: {stuck}")  # fmt: skip
    finally:
        finished.set()
        run.progress.set()
        await kills
    return run, client, time.monotonic() - t0


async def describe_stuck(client: CrashTolerantClient, run: Run) -> list[str]:
    """Where the first few unanswered sessions stand: their journal entries, in order."""
    answered = {a.session for a in run.answers}
    out = []
    for name in [f"s{i}" for i in range(SESSIONS) if f"s{i}" not in answered][:5]:
        try:
            items = await client.transcript(name)
        except Exception as exc:  # not even created, or the server is away
            out.append(f"{name}: {exc}")
            continue
        out.append(f"{name}: " + " ".join(f"{e['kind']}/{e['stage']}" for e in items))
    return out


async def audit(client: CrashTolerantClient, run: Run) -> list[str]:
    """Read every transcript back: one input, one final (the right one), each stage once."""
    problems: list[str] = []
    gate = asyncio.Semaphore(16)
    extra_outputs: Counter[str] = Counter()

    async def check(i: int) -> None:
        async with gate:
            items = await client.transcript(f"s{i}")
        kinds = Counter(e["kind"] for e in items)
        finals = [e for e in items if e["kind"] == "final"]
        inputs = [e["id"] for e in items if e["kind"] == "input"]
        outputs = Counter(e["stage"] for e in items if e["kind"] == "output")
        if inputs != [f"in-{i}"]:
            problems.append(f"s{i}: inputs {inputs}")
        if [(f["message"]["payload"], f["parent"]) for f in finals] != [(f"B:A:M{i}", f"in-{i}")]:
            problems.append(f"s{i}: finals {[f['message']['payload'] for f in finals]}")
        if kinds["error"]:
            problems.append(f"s{i}: {kinds['error']} error entries")
        for stage in ("s1", "s2", "s3"):
            if outputs[stage] != 1:
                extra_outputs[stage] += outputs[stage] - 1
                problems.append(f"s{i}: stage {stage} output recorded {outputs[stage]} times")

    await asyncio.gather(*(check(i) for i in range(SESSIONS)))
    if extra_outputs:
        print(f"stage outputs recorded more than once: {dict(extra_outputs)}")
    return problems


async def crash_run(server: Apiaryd) -> None:
    seed = int(os.environ.get("APIARY_CRASH_SEED", random.randrange(1 << 30)))
    print(f"\nAPIARY_CRASH_SEED={seed}")
    cell = new_cell()
    c = server.client(cell)
    for obj in pipeline(cell):
        c.create(obj)
    wait_drones(c, cell, n_ready(6), 30, "6 drones Ready")
    await asyncio.sleep(0.3)  # workers subscribe right after Ready is reported
    run, client, took = await drive(server, cell, seed)
    try:
        by_session = Counter(a.session for a in run.answers)
        assert len(by_session) == SESSIONS and max(by_session.values()) == 1
        wrong = [(a.session, a.final["message"]["payload"]) for a in run.answers
                 if a.final["message"]["payload"] != f"B:A:M{a.session[1:]}"]  # fmt: skip
        assert not wrong, wrong[:10]
        problems = await audit(client, run)
        assert not problems, f"{len(problems)} problems: {problems[:20]}"
    finally:
        await client.aclose()
    latency = sorted(a.answered_at - a.accepted_at for a in run.answers)
    print(f"{SESSIONS} sessions, {len(run.crashes)} kills in {took:.1f}s: "
          f"{SESSIONS / took:.0f} sessions/s overall; accept→final p50 "
          f"{statistics.median(latency) * 1000:.0f} ms, max {latency[-1]:.2f}s")  # fmt: skip
    for n, k in enumerate(run.crashes, 1):
        print(f"kill {n} after {k.at_done} done: ready again in {k.restart:.2f}s, "
              f"finals flowing again {k.recover:.2f}s after the kill")  # fmt: skip
    print(f"client retries: {dict(sorted(client.tally.retries.items()))}; "
          f"creates that found their session made: {client.tally.already_existed}")  # fmt: skip
    assert len(run.crashes) == KILLS
    server.stop()
    deadline = time.monotonic() + 15
    while agent_processes(cell) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not agent_processes(cell), "agent processes outlived apiaryd"


@pytest.fixture
def embedded(tmp_path: Path) -> AsyncIterator[Apiaryd]:
    server = Apiaryd(tmp_path / "data", ["--port", str(free_port())]).start()
    yield server  # type: ignore[misc]
    server.stop()


@pytest.mark.slow
async def test_kill9_embedded(embedded: Apiaryd) -> None:
    await crash_run(embedded)


@pytest.fixture
async def scaled(tmp_path: Path) -> AsyncIterator[Apiaryd]:
    """PostgreSQL + NATS with the short ack wait the crash run relies on, on a fixed port."""
    async with scaled_apiaryd(
        tmp_path / "data", prefix="CRASH", bus_query=f"&ack_wait={ACK_WAIT}",
        args=("--port", str(free_port())),
    ) as server:  # fmt: skip
        yield server


@pytest.mark.slow
async def test_kill9_on_postgres_and_nats(scaled: Apiaryd) -> None:
    await crash_run(scaled)


def test_ack_wait_option_is_checked() -> None:
    """The NATS ``ack_wait`` option the NATS variant relies on: a cap, validated by name."""
    from apiary.bus.nats_options import NatsOptions
    from apiary.errors import Invalid

    assert NatsOptions("nats://h:4222", {}).ack_wait is None
    assert NatsOptions(f"nats://h:4222?ack_wait={ACK_WAIT}", {}).ack_wait == ACK_WAIT
    with pytest.raises(Invalid) as bad:
        NatsOptions("nats://h:4222?ack_wait=0", {})
    assert bad.value.details[0].field == "bus.ack_wait"


async def test_ack_wait_caps_the_consumer() -> None:
    """A subscription asking for 30 s gets the capped ack wait on the JetStream consumer itself
    (the server's timer is what redelivers a dead process's work)."""
    import nats as nats_py

    from apiary.bus import open_bus

    nats = require_nats()
    stream = f"ACKCAP{int(time.time() * 1000) % 10**9}"

    async def handler(delivery: object) -> None:
        return None

    try:
        async with open_bus(f"{nats}?stream={stream}&ack_wait=2") as bus:
            sub = await bus.subscribe("apiary.c.h.s.in", "c.h.s", handler, ack_wait=30.0)
            nc = await nats_py.connect(nats)
            try:
                infos = await nc.jetstream().consumers_info(stream)
                assert [i.config.ack_wait for i in infos] == [2.0]
            finally:
                await nc.close()
            await sub.drain()
    finally:
        nc = await nats_py.connect(nats)
        try:
            await nc.jetstream().delete_stream(stream)
        except Exception:
            pass
        await nc.close()
