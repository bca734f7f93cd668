"""What goes wrong shows in the trace: a drone's timeout is the error status of its ``process``
span, and the router's steps carry the timeout, the retry and the dead letter as span events
(the dead letter as the step's error status) — exported over OTLP/HTTP like the rest."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from apiary.telemetry import tracing
from apiary.waggle import Message
from fakes.otlp_receiver import Got, OtlpReceiver, running_receiver
from stack import agentspec, hive, is_ready, running_stack, session

SILENT = [sys.executable, "-c", "import sys, time\nfor line in sys.stdin: time.sleep(60)"]
ERROR = 2


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with running_receiver() as r:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        assert tracing.init_tracing("apiaryd")
        try:
            yield r
        finally:
            tracing.shutdown_tracing()


async def test_timeouts_retries_and_the_dead_letter_are_span_events(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    cell = f"otelf-{os.getpid()}"
    async with running_stack(tmp_path, cell, messaging=True) as s:
        assert s.router is not None and s.journal is not None
        agent = agentspec(cell, "silent", SILENT, fmt="waggle")
        agent["spec"]["guardrails"] = {"responseTimeoutSeconds": 0.3}
        await s.apply(agent)
        h = hive(cell, "h", [("only", "silent", 1)])
        h["spec"]["routing"] = {"retryPolicy": {"maxRetries": 1, "initialDelaySeconds": 0.05}}
        await s.apply(h)
        await s.wait(lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 15, "drone ready")
        await s.store.create(session(cell, "s", "h"))
        message = await s.router.submit(cell, "s", Message("anyone there?"))
        for _ in range(200):  # both attempts failed: the second failure dead-letters
            events = await s.journal.read(f"{cell}/s", kinds={"event"})
            if sum("#failed" in e.id for e in events) >= 2:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the second attempt never failed")
    tracing.force_flush()
    assert message.traceparent is not None  # the journaled input names its trace
    trace_id = message.traceparent.split("-")[1]

    def dead(got: list[Got]) -> bool:
        return any("apiary.dead_letter" in g.events for g in got if g.trace_id == trace_id)

    receiver.wait_for(dead)
    spans = receiver.trace(trace_id)
    names = sorted(g.name for g in spans)
    processes = [g for g in spans if g.name == "process only"]
    assert len(processes) == 2, names  # the first attempt and its retry
    assert sorted(g.attributes["apiary.attempt"] for g in processes) == [0, 1]
    for p in processes:
        assert p.status == ERROR and "apiary.error" in p.events
    steps = [g for g in spans if g.name == "route outcome"]
    events = [e for g in steps for e in g.events]
    assert events.count("apiary.timeout") == 2, events
    assert "apiary.retry" in events and "apiary.dead_letter" in events
    (last,) = [g for g in steps if "apiary.dead_letter" in g.events]
    assert last.status == ERROR
