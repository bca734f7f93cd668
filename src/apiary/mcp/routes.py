"""``/mcp/cells/{cell}`` on apiaryd: the cell's exposed hives as one MCP server (Streamable HTTP).

Authentication is the REST API's bearer token (the middleware has checked it); POST carries the
JSON-RPC messages, GET and DELETE are 405 (a stateless server: no stream of its own to open, no
session to end). MCP's own protocol, not a REST resource: the routes are left out of the OpenAPI
document (docs/interop.md describes them).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from apiary.api.bodies import read_body
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.session_create import state_of
from apiary.api.tokens import MethodNotAllowed
from apiary.mcp.hives import HiveTools
from apiary.mcp.protocol import serve

PATH = "/mcp/cells/{cell}"


def mcp_routes() -> APIRouter:
    r = APIRouter(tags=["mcp"])

    @r.post(PATH, include_in_schema=False)
    async def post(request: Request, cell: str) -> Response:
        state = state_of(request)
        raw = await read_body(request, state.config.max_body_bytes)
        return await serve(raw, HiveTools(state, request.scope[PRINCIPAL_KEY], cell))

    @r.get(PATH, include_in_schema=False)
    async def get(request: Request, cell: str) -> Response:
        raise MethodNotAllowed("this MCP server opens no stream of its own: POST only")

    @r.delete(PATH, include_in_schema=False)
    async def delete(request: Request, cell: str) -> Response:
        raise MethodNotAllowed("this MCP server keeps no session to end: POST only")

    return r
