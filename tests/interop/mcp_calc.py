"""A test MCP server built with the ``mcp`` SDK: ``add`` and ``shout`` over Streamable HTTP.

Run: ``python mcp_calc.py PORT [TOKEN]`` (serves ``http://127.0.0.1:PORT/mcp``); with a TOKEN
every request must carry ``Authorization: Bearer TOKEN`` (else 401)."""

import asyncio
import sys
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer

app = MCPServer("calc")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@app.tool()
def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


@app.tool()
async def nap(seconds: float) -> str:
    """Sleep, then say so (for timeouts)."""
    await asyncio.sleep(seconds)
    return "rested"


def guarded(inner: Any, token: str) -> Any:
    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            if headers.get(b"authorization") != f"Bearer {token}".encode():
                await send({"type": "http.response.start", "status": 401, "headers": []})
                await send({"type": "http.response.body", "body": b"no token"})
                return
        await inner(scope, receive, send)

    return asgi


if __name__ == "__main__":
    port = int(sys.argv[1])
    served = app.streamable_http_app()
    if len(sys.argv) > 2:
        served = guarded(served, sys.argv[2])
    uvicorn.run(served, host="127.0.0.1", port=port, log_level="warning")
