"""A test MCP server built with the ``mcp`` SDK, over stdio: what a ``command`` entry of
``spec.mcpServers`` starts. The tools of :mod:`mcp_calc` (``add``, ``shout``, ``nap``) and
``whoami`` (the process's pid, uid, gid, groups, HOME and the ``CALC_GREETING`` variable, so a
test sees whose process it is)."""

import os

from mcp_calc import app  # this file's folder is on sys.path when it runs as a script


@app.tool()
def whoami() -> dict[str, object]:
    """Who and where this server process is."""
    return {"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(),
            "groups": os.getgroups(), "home": os.environ.get("HOME"),
            "greeting": os.environ.get("CALC_GREETING"),
            "keeperToken": "APIARY_KEEPER_TOKEN" in os.environ, "cwd": os.getcwd()}  # fmt: skip


if __name__ == "__main__":
    app.run("stdio")
