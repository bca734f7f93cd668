"""A drone gets stdin, stdout and stderr and nothing else, on the event loop apiaryd really runs
(uvloop, whose libuv spawn has no ``close_fds``) as well as asyncio's own.

Before: under uvloop the agent kept the child ends of its stdio socketpairs and every inheritable
descriptor of the node."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from apiary.node import LaunchSpec, launch

LIST_FDS = (
    "import json, os; fds = sorted(int(n) for n in os.listdir('/proc/self/fd'));"
    "print(json.dumps([f for f in fds if os.path.exists(f'/proc/self/fd/{f}')]))"
)


async def _fds_of_a_drone(cell: str) -> list[int]:
    leaky = socket.socket()
    leaky.bind(("127.0.0.1", 0))
    leaky.listen()
    leaky.set_inheritable(True)  # what a careless library in the node might do
    r, w = os.pipe()
    os.set_inheritable(r, True)
    try:
        proc = await launch(LaunchSpec(drone="fds", cell=cell,
                                       command=[sys.executable, "-c", LIST_FDS]))  # fmt: skip
        out = await asyncio.wait_for(proc.stdout.read(), 10)  # type: ignore[union-attr]
        assert await proc.wait() == 0, proc.last_stderr
    finally:
        leaky.close()
        os.close(r)
        os.close(w)
    listed: list[int] = json.loads(out)
    return [fd for fd in listed if fd > 2]


def _run(loop_factory: Callable[[], asyncio.AbstractEventLoop],
         main: Coroutine[Any, Any, list[int]]) -> list[int]:  # fmt: skip
    loop = loop_factory()
    try:
        return loop.run_until_complete(main)
    finally:
        loop.close()


@pytest.mark.parametrize("loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop],
                         ids=["uvloop", "asyncio"])  # fmt: skip
def test_only_stdio_reaches_the_drone(
    cell: str, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    assert _run(loop_factory, _fds_of_a_drone(cell)) == []
