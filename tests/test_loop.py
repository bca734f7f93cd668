"""apiaryd and ``apiaryd node`` run on the same event loop: uvloop's (``apiary.loop``)."""

from __future__ import annotations

import asyncio

import uvloop

from apiary import loop
from apiary.node import main as node_main
from apiary.server import main as server_main


def test_run_uses_uvloop_and_returns_the_result() -> None:
    async def which() -> type:
        return type(asyncio.get_running_loop())

    assert loop.run(which()) is uvloop.Loop


def test_the_node_and_the_server_run_on_it() -> None:
    assert node_main.run_loop is loop.run
    assert server_main.run_loop is loop.run
