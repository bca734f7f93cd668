"""Another replica inside one test: its own event loop on a thread of its own.

Two stores or journals in one event loop take turns; a write made from another thread really
runs while the caller is stopped in the middle of its own (between a read and a write, say,
from inside a hook the test patched in), as another apiaryd replica's write would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any


def run_elsewhere(work: Callable[[], Coroutine[Any, Any, object]], timeout: float = 30.0) -> None:
    """Run ``work()`` to its end on a new event loop in another thread, and wait for it; its
    exception, if any, fails the caller."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(work())
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"the other replica did not finish within {timeout:g} s"
    assert not failed, failed
