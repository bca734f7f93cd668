"""Without the ``interop`` extra (no ``mcp`` package on the node) the keeper's MCP proxy says
what to install instead of failing with an ImportError; the rest of apiaryd does not need it."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from apiary.mcp.keeper import NO_SDK, Upstream, connect, upstreams
from apiary.mcp.protocol import McpError


async def test_a_call_without_the_mcp_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mcp", None)  # import mcp → ImportError
    with pytest.raises(McpError) as refused:
        async with connect(Upstream("calc", "http://127.0.0.1:9/mcp")):
            pass
    assert refused.value.message == NO_SDK and "apiary[interop]" in NO_SDK


def test_the_drone_spec_is_read_defensively() -> None:
    spec = {"mcpServers": [{"name": "calc", "url": "http://x/mcp", "allowTools": ["add"],
                            "timeoutSeconds": 2, "headersFrom": [
                                {"name": "Authorization", "prefix": "Bearer ",
                                 "secretKeyRef": {"name": "s", "key": "k"}}]},
                           {"name": "stdio", "command": ["srv"]}, "junk"]}  # fmt: skip
    calc, stdio = upstreams(spec).values()
    assert calc.allows("add") and not calc.allows("shout") and calc.timeout == 2
    assert stdio.stdio and stdio.command == ("srv",) and not stdio.url and not calc.stdio
    assert calc.secret_headers == (("Authorization", "Bearer ", "s", "k"),)
    assert Upstream("all", "http://x", frozenset({"*"})).allows("anything")


async def test_a_stdio_server_without_the_mcp_sdk_is_not_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apiary.node.mcpstdio import NO_SDK as NO_STDIO_SDK
    from apiary.node.mcpstdio import ServerUnavailable, StdioServers

    started: list[str] = []

    async def launch(name: str) -> Any:
        started.append(name)
        raise AssertionError("started without the SDK")

    monkeypatch.setitem(sys.modules, "mcp", None)
    with pytest.raises(ServerUnavailable) as refused:
        await StdioServers(launch).client("calc")
    assert str(refused.value) == NO_STDIO_SDK and "apiary[interop]" in NO_STDIO_SDK
    assert started == []
