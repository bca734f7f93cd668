"""Point 3 of issue 16, second half: exposed hives as MCP tools on apiaryd, listed and called
by the real ``mcp`` SDK client over Streamable HTTP (a real apiaryd, real agent processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from e2e.cluster import Apiaryd, new_cell

from .kit import deploy, hive

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Apiaryd, str]]:
    apiaryd = Apiaryd(Path(tmp_path_factory.mktemp("mcp")) / "data").start()
    try:
        cell = new_cell()
        deploy(apiaryd, cell, [
            hive(cell, "writer", gated=False, a2a={"expose": True, "description": "writes"}),
            hive(cell, "gated", gated=True, a2a={"expose": True}),
            hive(cell, "hidden", gated=False),
        ])  # fmt: skip
        yield apiaryd, cell
    finally:
        apiaryd.stop()


def connect(apiaryd: Apiaryd, cell: str, token: str | None = None) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token or apiaryd.token}"})
    return Client(streamable_http_client(f"{apiaryd.url}/mcp/cells/{cell}", http_client=http))


async def test_an_mcp_client_lists_and_calls_exposed_hives(server: tuple[Apiaryd, str]) -> None:
    apiaryd, cell = server
    async with connect(apiaryd, cell) as mcp:
        tools = (await mcp.list_tools()).tools
        assert sorted(t.name for t in tools) == ["gated", "writer"]
        writer = next(t for t in tools if t.name == "writer")
        assert writer.description == "writes" and writer.input_schema["required"] == ["input"]
        result = await mcp.call_tool("writer", {"input": "hello world"})
        assert not result.is_error
        assert result.content[0].text == "ok: draft: hello world"
        assert result.structured_content is not None
        session = result.structured_content["session"]
        assert session.startswith("mcp-")
        held = await mcp.call_tool("gated", {"input": "ship it"})
        assert held.is_error and "approval" in held.content[0].text
        with pytest.raises(MCPError, match="no exposed hive"):  # a hidden hive is no tool
            await mcp.call_tool("hidden", {"input": "x"})
    with apiaryd.client(cell) as c:  # the call was an ordinary job session of the hive
        s = c.get("Session", session, cell)
        assert s["spec"]["hiveRef"] == "writer"
