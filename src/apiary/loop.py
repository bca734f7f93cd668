"""The event loop apiaryd and ``apiaryd node`` run on: uvloop where it is installed.

One place decides, so the control plane and a node on a worker machine run the same loop (the
embedded node already ran on apiaryd's). uvloop comes with ``uvicorn[standard]``; without it the
standard loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` to completion on a new event loop (uvloop's when installed)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        return asyncio.run(main)
    return uvloop.run(main)


__all__ = ["run"]
