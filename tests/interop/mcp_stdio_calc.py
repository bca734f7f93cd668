"""A test MCP server built with the ``mcp`` SDK, over stdio: what a ``command`` entry of
``spec.mcpServers`` starts. ``add``, ``shout``, ``nap`` and ``whoami`` (the process's pid, uid,
gid, groups, HOME and the ``CALC_GREETING`` variable, so a test sees whose process it is)."""

import asyncio
import os

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
    """Sleep, then say so (for timeouts and hang-ups)."""
    await asyncio.sleep(seconds)
    return "rested"


@app.tool()
def whoami() -> dict[str, object]:
    """Who and where this server process is."""
    return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
            "groups": os.getgroups(), "home": os.environ.get("HOME"),
            "greeting": os.environ.get("CALC_GREETING"),
            "keeperToken": "APIARY_KEEPER_TOKEN" in os.environ, "cwd": os.getcwd()}  # fmt: skip


if __name__ == "__main__":
    app.run("stdio")
