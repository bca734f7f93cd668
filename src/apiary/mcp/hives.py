"""A cell's exposed hives as MCP tools (``/mcp/cells/{cell}`` on apiaryd).

Every hive with ``spec.a2a.expose: true`` — the same switch that makes it an A2A agent — is one
tool named after it, whose one argument ``input`` is the session input (any JSON). A call runs
the hive as a job session (``mcp-xxxxxxxx``, label ``apiary.io/mcp``) and answers its final
payload (text, and ``structuredContent: {output, session}``); a failure, a rejection or an
approval gate the call cannot wait for is a tool result with ``isError: true`` saying so. Roles
are the REST API's: listing needs ``list`` on Hive, calling ``create`` on Session.
"""

from __future__ import annotations

from typing import Any

import orjson

from apiary.a2a import tasks
from apiary.a2a.card import a2a_settings, exposed
from apiary.a2a.events import COMPLETED, INPUT_REQUIRED
from apiary.api.session_ops import SessionOps
from apiary.api.state import ApiState
from apiary.errors import ApiaryError, NotFound
from apiary.mcp.protocol import INVALID_PARAMS, McpError, text_result
from apiary.security import Principal

Obj = dict[str, Any]
MCP_LABEL = "apiary.io/mcp"
INPUT_SCHEMA: Obj = {
    "type": "object",
    "properties": {"input": {"description": "the session input: any JSON value"}},
    "required": ["input"],
}


class HiveTools:
    """The tool set of one cell, for one caller."""

    def __init__(self, state: ApiState, principal: Principal, cell: str) -> None:
        self.state, self.principal, self.cell = state, principal, cell
        self.name = f"apiary-{cell}"

    def _authorize(self, verb: str, kind: str) -> None:
        self.state.authorizer.authorize(self.principal, verb, kind, self.cell)

    async def list_tools(self) -> list[Obj]:
        self._authorize("list", "Hive")
        hives = (await self.state.store.list("Hive", self.cell)).items
        return [_tool(h) for h in hives if exposed(h)]

    async def call_tool(self, name: str, arguments: Obj) -> Obj:
        self._authorize("create", "Session")
        try:
            hive = await self.state.store.get("Hive", self.cell, name)
        except NotFound:
            hive = None
        if hive is None or not exposed(hive):
            raise McpError(INVALID_PARAMS, f"params.name: no tool {name!r} (no exposed hive of "
                                           f"that name in cell {self.cell!r})")  # fmt: skip
        if "input" not in arguments:
            raise McpError(INVALID_PARAMS, "params.arguments.input: required, the session input")
        ops = SessionOps(self.state)
        try:
            info = await tasks.create(ops, self.cell, name, arguments["input"], {},
                                      prefix="mcp-", label=MCP_LABEL)  # fmt: skip
            v = await tasks.wait_until_paused(ops, info, info.name)
        except ApiaryError as exc:
            return text_result(f"hive {name!r} could not run: {exc.message}", error=True)
        if v.state == COMPLETED:
            output = v.artifacts[-1]["parts"][0] if v.artifacts else {}
            payload = output.get("text", output.get("data"))
            text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
            return text_result(text, structured={"output": payload, "session": info.name})
        if v.state == INPUT_REQUIRED:
            why = (f"session {info.name!r} waits for a human's approval of "
                   f"{', '.join(v.waiting)}; its answer comes once approved")  # fmt: skip
            return text_result(why, error=True, structured={"session": info.name})
        said = v.message["parts"][0].get("text", "") if v.message else ""
        return text_result(f"hive {name!r}: session {info.name!r} is {v.state}: {said}",
                           error=True, structured={"session": info.name})  # fmt: skip


def _tool(hive: Obj) -> Obj:
    meta, settings = hive["metadata"], a2a_settings(hive)
    description = settings.get("description") or f"runs Apiary hive {meta['name']!r}"
    return {"name": meta["name"], "description": description, "inputSchema": INPUT_SCHEMA}
