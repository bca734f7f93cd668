"""A test MCP server built with the ``mcp`` SDK: ``add`` and ``shout`` over Streamable HTTP.

Run: ``python mcp_calc.py PORT`` (serves ``http://127.0.0.1:PORT/mcp``)."""

import sys

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


if __name__ == "__main__":
    app.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
