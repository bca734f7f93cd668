"""``apiaryd node`` announces ``joined`` once its Node is registered, never before.

Scripts and tests wait for that line before they apply Hives; announced before the Node existed
with a fresh lease, a second node could miss the scheduler's first pass (the e2e two-node test
once put all four drones on one node under CI load). The agent and the client are stand-ins
here so the registration can be held back as long as the test likes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from apiary.node import main
from apiary.node.agent import NodeSettings


class _Client:
    def __init__(self, server: str | None, token: str | None) -> None:
        self.server = server

    async def __aenter__(self) -> _Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def whoami(self) -> dict[str, Any]:
        return {"role": "admin"}


class _Log:
    def __init__(self, said: list[str]) -> None:
        self.said = said

    def info(self, message: str, **fields: object) -> None:
        self.said.append(message)


def _agent(said: list[str], fail: bool) -> type:
    class Agent:
        def __init__(self, client: object, settings: NodeSettings, bus: object) -> None:
            self.registered = asyncio.Event()

        async def run(self, stop: asyncio.Event) -> None:
            await asyncio.sleep(0.2)  # a slow registration: the Node is not stored yet
            if fail:
                raise RuntimeError("the server refused the Node")
            said.append("registered")
            self.registered.set()
            await asyncio.sleep(0.05)  # heartbeats …, then a stop

    return Agent


@pytest.fixture
def said(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []
    monkeypatch.setattr(main, "AsyncApiClient", _Client)
    monkeypatch.setattr(main, "get_logger", lambda name: _Log(lines))
    return lines


def test_joined_comes_after_the_node_is_registered(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main, "NodeAgent", _agent(said, fail=False))
    asyncio.run(main.run_node(NodeSettings(name="n1"), "http://cp", "t"))
    assert said == ["registered", "apiaryd node n1 joined http://cp"]


def test_a_node_that_never_registered_never_says_joined(
    said: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(main, "NodeAgent", _agent(said, fail=True))
    with pytest.raises(RuntimeError, match="refused"):
        asyncio.run(main.run_node(NodeSettings(name="n1"), "http://cp", "t"))
    assert said == []
