"""An agent that uses the ``mcp`` SDK's client against its keeper's MCP endpoint, whose
``calc`` server is a stdio one (tests/interop/mcp_stdio_calc.py, started by the node).

For each input it lists its tools, calls ``calc.add`` and ``calc.whoami`` (the server's pid and
uid), tries ``calc.shout`` (not allowed), and — when the input says ``hangup`` — calls
``calc.nap`` and hangs up before it answers. Waggle lines on stdin/stdout."""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def _client(timeout: float, traceparent: str | None = None) -> tuple[httpx2.AsyncClient, Client]:
    headers = {"Authorization": f"Bearer {os.environ['APIARY_KEEPER_TOKEN']}"}
    if traceparent:  # the tool calls join the message's trace
        headers["traceparent"] = traceparent
    http = httpx2.AsyncClient(headers=headers, timeout=timeout)
    url = os.environ["APIARY_KEEPER_URL"] + "/mcp"
    return http, Client(streamable_http_client(url, http_client=http))


async def handle(text: str, traceparent: str | None) -> dict:
    http, client = _client(30, traceparent)
    async with http, client as mcp:
        names = sorted(t.name for t in (await mcp.list_tools()).tools)
        added = await mcp.call_tool("calc.add", {"a": 2, "b": 3})
        who = (await mcp.call_tool("calc.whoami", {})).structured_content
        try:
            await mcp.call_tool("calc.shout", {"text": text})
            refused = ""
        except MCPError as exc:
            refused = str(exc)
    answer = {"tools": names, "sum": added.content[0].text, "refused": refused, "who": who}
    if text == "hangup":  # the call is cancelled upstream; the server's session lives on
        http, client = _client(1)
        try:
            async with http, client as mcp:
                await asyncio.wait_for(mcp.call_tool("calc.nap", {"seconds": 20}), 1)
        except BaseException as exc:  # any way of hanging up will do
            answer["hungUp"] = type(exc).__name__
    return answer


for line in sys.stdin:
    message = json.loads(line)
    answer = asyncio.run(handle(str(message["payload"]), message.get("traceparent")))
    print(json.dumps({"type": "result", "payload": answer}), flush=True)
