"""Server tests run apiaryd as real subprocesses; the in-test client loop is uvloop too."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="session")
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    import uvloop

    return uvloop.EventLoopPolicy()
