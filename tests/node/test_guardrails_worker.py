"""Guardrails at a drone's worker, with real agent processes on the in-process bus: a rate-limited
or tripped drone hands work back to the queue (other replicas take it, none is lost), the
circuit breaker leaves and rejoins the queue group, and outcome errors carry the documented
reasons; and a stopping drone hands back what its agent still holds after the grace."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from apiary.bus import Bus, Delivery, open_bus
from apiary.node.circuit import CLOSED, HALF_OPEN, OPEN, State
from apiary.node.keeper import Keeper
from apiary.node.worker import StageWorker
from apiary.waggle import Message
from apiary.waggle.envelope import Dispatch, Outcome, outcome_subject, stage_subject

ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']
# Answers `error` to its first FAIL_FIRST messages, then echoes; USAGE tokens on each answer.
FLAKY = [
    sys.executable,
    "-c",
    """
import json, os, sys
left = int(os.environ.get("FAIL_FIRST", "0"))
usage = int(os.environ.get("USAGE", "0"))
for line in sys.stdin:
    msg = json.loads(line)
    if left > 0:
        left -= 1
        out = {"type": "error", "payload": {"message": "boom"}, "version": "1.0"}
    else:
        out = {"type": "result", "payload": msg["payload"], "version": "1.0",
               "usage": {"promptTokens": usage, "completionTokens": 0}}
    print(json.dumps(out), flush=True)
""",
]


class Rig:
    """A bus, drones (keeper + worker + real process) of one stage, and the outcomes."""

    def __init__(self, bus: Bus, cell: str) -> None:
        self.bus, self.cell = bus, cell
        self.outcomes: list[Outcome] = []
        self.procs: list[asyncio.subprocess.Process] = []
        self.workers: list[StageWorker] = []
        self.arrived = asyncio.Event()

    async def collect(self) -> None:
        async def take(d: Delivery) -> None:
            self.outcomes.append(Outcome.decode(d.data))
            self.arrived.set()
            await d.ack()

        await self.bus.subscribe(outcome_subject(self.cell, "h"), "test", take, max_in_flight=64)

    async def drone(self, name: str, argv: list[str], fmt: str = "text", **kw: Any) -> StageWorker:
        env = {**os.environ, "APIARY_CELL": self.cell, **kw.pop("env", {})}
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env
        )
        self.procs.append(proc)
        keeper = Keeper({"type": "stdin", "format": fmt}, name=name)
        await keeper.attach(proc)
        worker = StageWorker(self.bus, keeper, cell=self.cell, hive="h", stage="s", drone=name,
                             **kw)  # fmt: skip
        self.workers.append(worker)
        await worker.start()
        return worker

    async def send(self, n: int, start: int = 0) -> None:
        for i in range(start, start + n):
            d = Dispatch(f"d{i}", f"{self.cell}/s", "h", "s", Message(f"m{i}").to_dict())
            await self.bus.publish(stage_subject(self.cell, "h", "s"), d.encode(), msg_id=d.msg_id)

    async def until(self, n: int, timeout: float = 15.0) -> list[Outcome]:
        deadline = time.monotonic() + timeout
        while len(self.outcomes) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"only {len(self.outcomes)} of {n} outcomes after {timeout}s")
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), 0.2)
            except TimeoutError:
                pass
        return self.outcomes

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        for proc in self.procs:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


@pytest.fixture
async def rig(cell: str) -> AsyncIterator[Rig]:
    async with open_bus("memory://") as bus:
        r = Rig(bus, cell)
        await r.collect()
        try:
            yield r
        finally:
            await r.close()


async def test_without_guardrails_the_worker_has_no_chain(rig: Rig) -> None:
    worker = await rig.drone("a", ECHO, guardrails={"responseTimeoutSeconds": 5})
    assert worker.guard is None and worker.circuit is None
    await rig.send(3)
    outs = await rig.until(3)
    assert sorted(o.outputs[0]["payload"] for o in outs) == ["Echo: m0", "Echo: m1", "Echo: m2"]


async def test_rate_limited_drone_delays_the_excess_and_loses_nothing(rig: Rig) -> None:
    worker = await rig.drone("a", ECHO, guardrails={"rateLimitPerMinute": 1200})  # 20/s, burst 20
    t0 = time.monotonic()
    await rig.send(40)
    outs = await rig.until(40)
    took = time.monotonic() - t0
    assert sorted(o.dispatch for o in outs) == sorted(f"d{i}" for i in range(40))  # each once
    assert all(o.error is None for o in outs)
    assert took >= 0.9  # 20 at once, the other 20 at 20/s
    assert worker.guard is not None and worker.guard.stats.rate_limited > 0


async def test_rate_limited_drone_leaves_the_excess_to_other_replicas(rig: Rig) -> None:
    await rig.drone("slow", ECHO, guardrails={"rateLimitPerMinute": 6})  # burst 1, then 1 per 10s
    await rig.drone("free", ECHO)
    await rig.send(20)
    outs = await rig.until(20)
    by = {o.drone for o in outs if o.dispatch}
    assert by <= {"slow", "free"}
    assert sum(1 for o in outs if o.drone == "slow") <= 1
    assert sorted(o.dispatch for o in outs) == sorted(f"d{i}" for i in range(20))


async def test_per_request_token_budget_is_a_hard_stop_and_the_answer_is_kept(rig: Rig) -> None:
    await rig.drone("a", FLAKY, "waggle", guardrails={"tokenBudgetPerRequest": 10},
                    env={"USAGE": "11"})  # fmt: skip
    await rig.send(1)
    (o,) = await rig.until(1)
    assert o.error == ("TokenBudgetExceeded",
                       "the answer used 11 tokens, over tokenBudgetPerRequest 10")  # fmt: skip
    assert o.outputs[0]["payload"] == "m0"  # recorded: the session's token count includes it


async def test_per_minute_budget_stops_intake_until_the_window_has_room(rig: Rig) -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    worker = await rig.drone("a", FLAKY, "waggle", guardrails={"tokenBudgetPerMinute": 100},
                             env={"USAGE": "60"}, clock=clock)  # fmt: skip
    await rig.send(2)
    await rig.until(2)  # 120 tokens in the window at t=0: over the budget until t=60
    clock.now = 59.9  # a short wait: the drone holds the next message until the window moves
    await rig.send(1, start=2)
    await asyncio.sleep(0.4)
    assert len(rig.outcomes) == 2
    assert worker.guard is not None and worker.guard.stats.budget_waits >= 2
    clock.now = 60.0
    outs = await rig.until(3, timeout=3)
    assert all(o.error is None for o in outs) and outs[2].outputs[0]["payload"] == "m2"


async def test_a_long_wait_hands_the_message_back_and_pauses_the_drone(rig: Rig) -> None:
    worker = await rig.drone("a", ECHO, guardrails={"rateLimitPerMinute": 30})  # 1 per 2 s
    t0 = time.monotonic()
    await rig.send(2)
    outs = await rig.until(2, timeout=10)
    assert [o.outputs[0]["payload"] for o in outs] == ["Echo: m0", "Echo: m1"]
    assert time.monotonic() - t0 >= 1.8  # the second waited in the queue for the next token
    assert worker.guard is not None and worker.guard.stats.rate_limited >= 1


async def test_circuit_opens_sends_work_elsewhere_and_reopens_after_a_failed_trial(
    rig: Rig,
) -> None:
    states: list[State] = []
    breaker = {"failureThreshold": 2, "resetTimeoutSeconds": 0.4}
    guard = {"circuitBreaker": breaker}
    sick = await rig.drone("sick", FLAKY, "waggle", env={"FAIL_FIRST": "1000"},
                           guardrails=guard, on_circuit=states.append)  # fmt: skip
    await rig.send(2)
    await rig.until(2)
    assert all(o.error is None and o.outputs[0]["type"] == "error" for o in rig.outcomes)
    assert sick.circuit == OPEN and states == [OPEN]
    await rig.drone("healthy", ECHO)
    await asyncio.sleep(0.05)
    await rig.send(10, start=2)
    outs = await rig.until(12)
    assert {o.drone for o in outs[2:]} == {"healthy"}  # the open drone took nothing
    # After the cooldown the sick drone rejoins, takes one trial, fails it, opens again.
    deadline = time.monotonic() + 5
    while states[-1:] != [OPEN] or len(states) < 3:
        assert time.monotonic() < deadline, states
        await rig.send(1, start=100 + len(rig.outcomes))
        await asyncio.sleep(0.1)
    assert states[:3] == [OPEN, HALF_OPEN, OPEN]


async def test_circuit_closes_after_a_successful_trial_and_queued_work_waited(rig: Rig) -> None:
    states: list[State] = []
    breaker = {"failureThreshold": 2, "resetTimeoutSeconds": 0.5}
    guard = {"circuitBreaker": breaker}
    worker = await rig.drone("only", FLAKY, "waggle", env={"FAIL_FIRST": "2"},
                             guardrails=guard, on_circuit=states.append)  # fmt: skip
    await rig.send(2)
    await rig.until(2)
    assert worker.circuit == OPEN
    opened = time.monotonic()
    await rig.send(3, start=2)  # nobody takes them while open: they wait in the queue
    outs = await rig.until(5)
    assert time.monotonic() - opened >= 0.4
    assert [o.outputs[0]["payload"] for o in outs[2:]] == ["m2", "m3", "m4"]
    assert states == [OPEN, HALF_OPEN, CLOSED] and worker.circuit == CLOSED


async def test_a_crashing_agent_opens_the_circuit(rig: Rig) -> None:
    states: list[State] = []
    die = [sys.executable, "-c", "import sys; sys.stdin.readline(); sys.exit(3)"]
    worker = await rig.drone("dying", die, guardrails={"circuitBreaker": {"failureThreshold": 1}},
                             on_circuit=states.append)  # fmt: skip
    await rig.send(1)
    deadline = time.monotonic() + 5
    while worker.circuit != OPEN:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await rig.drone("healthy", ECHO)
    (o,) = await rig.until(1)  # the crashed message is not lost: the healthy replica answers
    assert o.drone == "healthy" and o.outputs[0]["payload"] == "Echo: m0"


# ------------------------------------------------------------------ stopping is bounded

SINK = ["/bin/sh", "-c", "cat > /dev/null"]  # takes every message, never answers


async def test_stop_hands_held_messages_back_after_the_grace(rig: Rig) -> None:
    """Before, stop waited for an agent that never answered — and with it apiaryd's SIGTERM."""
    sink = await rig.drone("sink", SINK, stop_grace=0.3)
    await rig.send(1)
    await asyncio.sleep(0.3)  # the sink holds it
    assert sink.keeper.stats.in_flight == 1
    await rig.drone("echo", ECHO)
    t0 = time.monotonic()
    await sink.stop()
    assert time.monotonic() - t0 < 3
    (outcome,) = await rig.until(1)
    assert (outcome.drone, outcome.outputs[0]["payload"]) == ("echo", "Echo: m0")
