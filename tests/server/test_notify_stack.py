"""The notifier on a real router with real agent processes: a hive whose webhook never answers
routes as fast as one without (the router's hook only queues)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from apiary.server.notify import Notifier
from apiary.server.notify_metrics import NotifyMetrics
from apiary.waggle import Message
from stack import agentspec, hive, is_ready, running_stack, session

from .test_notify import Receiver, serving

ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']


async def test_a_black_hole_webhook_does_not_slow_routing(tmp_path: Path) -> None:
    cell = f"n{id(object()) % 100000}"
    async with (
        serving(Receiver(hang=True)) as black_hole,
        running_stack(tmp_path, cell, messaging=True) as stack,
    ):
        assert stack.router is not None and stack.journal is not None
        notifier = Notifier(stack.store, metrics=NotifyMetrics())
        stack.router.on_notice = notifier.on_notice
        worker = asyncio.create_task(notifier.run())
        try:
            await stack.apply(agentspec(cell, "echo", ECHO))
            h = hive(cell, "h", [("echo", "echo", 1)])
            h["spec"]["webhook"] = {"url": black_hole.url, "timeoutSeconds": 5}
            await stack.apply(h)
            await stack.wait(lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 15, "ready")
            await asyncio.sleep(0.1)
            started = time.monotonic()
            for i in range(30):
                await stack.store.create(session(cell, f"s{i}", "h"))
                await stack.router.submit(cell, f"s{i}", Message(f"m{i}"))
            for i in range(30):
                while not await stack.journal.read(f"{cell}/s{i}", kinds={"final"}):
                    assert time.monotonic() - started < 10, f"session s{i} got no answer"
                    await asyncio.sleep(0.01)
            # 60 notices (started + completed) to a receiver that never answers, 5 s each:
            # had routing waited for them, this would take minutes.
            assert time.monotonic() - started < 10
            await asyncio.wait_for(black_hole.arrived.wait(), 5)
            reg = notifier.metrics.registry
            labels = {"event": "session_completed", "cell": cell, "hive": "h"}
            assert reg.get_sample_value("apiary_notices_total", labels) == 30
        finally:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker
