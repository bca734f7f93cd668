"""The API middleware authenticates WebSocket handshakes too; lifespan passes untouched."""

from __future__ import annotations

from typing import Any

from apiary.api.metrics import ApiMetrics
from apiary.api.middleware import PRINCIPAL_KEY, ApiMiddleware
from apiary.security import Authenticator

Message = dict[str, Any]


class Inner:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)


async def run(scope: dict[str, Any]) -> tuple[Inner, list[Message]]:
    inner = Inner()
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        sent.append(message)

    mw = ApiMiddleware(inner, Authenticator.admin("good"), ApiMetrics())  # type: ignore[arg-type]
    await mw(scope, receive, send)
    return inner, sent


def ws(headers: list[tuple[bytes, bytes]], **extra: Any) -> dict[str, Any]:
    return {"type": "websocket", "path": "/api/v1/x", "headers": headers, **extra}


async def test_a_websocket_without_a_token_is_closed_before_the_handshake() -> None:
    inner, sent = await run(ws([]))
    assert inner.scopes == []
    assert sent[0]["type"] == "websocket.close" and sent[0]["code"] == 1008


async def test_a_websocket_is_refused_with_401_where_the_server_can_say_so() -> None:
    scope = ws([(b"authorization", b"Bearer bad")], extensions={"websocket.http.response": {}})
    inner, sent = await run(scope)
    assert inner.scopes == []
    assert sent[0]["type"] == "websocket.http.response.start" and sent[0]["status"] == 401
    assert b"invalid bearer token" in sent[1]["body"]


async def test_a_websocket_with_a_good_token_goes_on_with_its_principal() -> None:
    inner, sent = await run(ws([(b"authorization", b"Bearer good")]))
    assert sent == [] and inner.scopes[0][PRINCIPAL_KEY].cluster_admin


async def test_lifespan_passes() -> None:
    inner, sent = await run({"type": "lifespan"})
    assert sent == [] and len(inner.scopes) == 1
