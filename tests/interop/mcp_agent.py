"""An agent that uses the ``mcp`` SDK's client against its keeper's MCP endpoint.

For each input it lists its tools, calls ``calc.add`` and ``calc.nap`` (longer than the server's
``timeoutSeconds``) and tries ``calc.shout`` (which is not allowed), and answers what happened.
Waggle lines on stdin/stdout."""

import asyncio
import json
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


async def handle(text: str, traceparent: str | None) -> dict:
    token = os.environ["APIARY_KEEPER_TOKEN"]
    headers = {"Authorization": f"Bearer {token}"}
    if traceparent:  # the tool calls join the message's trace
        headers["traceparent"] = traceparent
    http = httpx2.AsyncClient(headers=headers, timeout=30)
    url = os.environ["APIARY_KEEPER_URL"] + "/mcp"
    async with http, Client(streamable_http_client(url, http_client=http)) as mcp:
        names = sorted(t.name for t in (await mcp.list_tools()).tools)
        added = await mcp.call_tool("calc.add", {"a": 2, "b": 3})
        napped = await mcp.call_tool("calc.nap", {"seconds": 5})  # over the server's timeout
        try:
            await mcp.call_tool("calc.shout", {"text": text})
            refused = ""
        except MCPError as exc:
            refused = str(exc)
    nap = [napped.is_error, napped.content[0].text]
    return {"tools": names, "sum": added.content[0].text, "refused": refused, "nap": nap}


for line in sys.stdin:
    message = json.loads(line)
    answer = asyncio.run(handle(str(message["payload"]), message.get("traceparent")))
    print(json.dumps({"type": "result", "payload": answer}), flush=True)
