"""The server side of MCP over Streamable HTTP, handshake era, answering JSON.

A client POSTs one JSON-RPC message at a time: ``initialize`` (answered with the client's
protocol revision when it is one of :data:`VERSIONS`, else the newest), the
``notifications/initialized`` notification (202), ``ping``, ``tools/list`` and ``tools/call``.
A modern client's ``server/discover`` probe is answered "method not found", which makes it fall
back to the handshake (the ``mcp`` SDK's ``mode="auto"`` does). The server is stateless — no
``Mcp-Session-Id``, so no GET stream and no DELETE — and every answer is ``application/json``.

A tool error is a result with ``isError: true`` (the model sees why); a protocol error (unknown
method, bad params, unknown tool) is a JSON-RPC error naming the field.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson
from starlette.responses import Response

Obj = dict[str, Any]

VERSIONS = ("2025-06-18", "2025-11-25")
"""Protocol revisions this server negotiates; the last is offered to other clients."""

METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INVALID_REQUEST = -32600
PARSE_ERROR = -32700


class McpError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class ToolSet(Protocol):
    """What an MCP endpoint serves: tools to list and to call."""

    name: str

    async def list_tools(self) -> list[Obj]:
        """``[{name, description, inputSchema}]``."""
        ...

    async def call_tool(self, name: str, arguments: Obj) -> Obj:
        """A ``CallToolResult``: ``{content: [...], isError?, structuredContent?}``; raise
        :class:`McpError` for a tool that does not exist."""
        ...


def text_result(text: str, *, error: bool = False, structured: Any = None) -> Obj:
    result: Obj = {"content": [{"type": "text", "text": text}], "isError": error}
    if structured is not None:
        result["structuredContent"] = structured
    return result


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


async def serve(raw: bytes, tools: ToolSet) -> Response:
    """Answer one POSTed JSON-RPC message (a batch is refused: the 2025-06-18 revision has none)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return _json(_error(None, McpError(PARSE_ERROR, f"not JSON: {exc}")), 400)
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        return _json(_error(None, McpError(INVALID_REQUEST, "one JSON-RPC 2.0 message")), 400)
    method, rpc_id = body.get("method"), body.get("id")
    if method is None:  # a response to a server request: we send none
        return Response(status_code=202)
    if "id" not in body:  # a notification: nothing to answer
        return Response(status_code=202)
    params = body.get("params") or {}
    try:
        if not isinstance(params, dict):
            raise McpError(INVALID_PARAMS, "params: must be an object")
        result = await _dispatch(str(method), params, tools)
    except McpError as exc:
        return _json(_error(rpc_id, exc))
    return _json({"jsonrpc": "2.0", "id": rpc_id, "result": result})


def _error(rpc_id: Any, exc: McpError) -> Obj:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": exc.code, "message": exc.message}}


async def _dispatch(method: str, params: Obj, tools: ToolSet) -> Obj:
    if method == "initialize":
        asked = params.get("protocolVersion")
        version = asked if asked in VERSIONS else VERSIONS[-1]
        return {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": tools.name, "version": "1"}}  # fmt: skip
    if method == "ping":
        return {}
    if method == "tools/list":
        return {"tools": await tools.list_tools()}
    if method == "tools/call":
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise McpError(INVALID_PARAMS, "params.name: required, the tool's name")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise McpError(INVALID_PARAMS, "params.arguments: must be an object")
        return await tools.call_tool(name, arguments)
    raise McpError(METHOD_NOT_FOUND, f"method {method!r} is not served here (this server speaks "
                                     f"the MCP handshake era, {', '.join(VERSIONS)}: "
                                     "initialize, ping, tools/list, tools/call)")  # fmt: skip
