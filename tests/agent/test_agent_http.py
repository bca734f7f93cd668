"""``apiary.agent.http``: the stdlib HTTP server the SDK offers for the http interface."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest

from apiary.agent import Context
from apiary.agent.http import make_server
from apiary.waggle import Message, decode, encode


def handler(msg: Message, ctx: Context) -> object:
    if msg.payload == "many":
        ctx.emit("one", "event")
        return "two"
    return {"echo": msg.payload}


@pytest.fixture
def base_url() -> Iterator[str]:
    server = make_server(handler, port=0, message_path="/msg", health_path="/up")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_health_and_messages(base_url: str) -> None:
    with httpx.Client(base_url=base_url, trust_env=False) as client:
        assert client.get("/up").status_code == 200
        assert client.get("/nope").status_code == 404
        msg = Message("hi", session_id="s")
        resp = client.post("/msg", content=encode(msg))
        assert resp.status_code == 200
        out = decode(resp.content)
        assert (out.type, out.payload, out.correlation_id, out.session_id) == (
            "result",
            {"echo": "hi"},
            msg.id,
            "s",
        )
        many = client.post("/msg", content=encode(Message("many"))).json()
        assert [m["payload"] for m in many] == ["one", "two"]
        assert many[0]["metadata"] == {"more": "true"} and many[1]["metadata"] == {}
        # plain text bodies work too (curl-friendly)
        assert decode(client.post("/msg", content=b"typed").content).payload == {"echo": "typed"}


def test_bad_requests_are_400_naming_the_field(base_url: str) -> None:
    with httpx.Client(base_url=base_url, trust_env=False) as client:
        resp = client.post("/msg", content=b'{"type": "shout", "payload": 1}')
        assert resp.status_code == 400
        assert resp.json()["payload"]["field"] == "type"
        assert client.post("/elsewhere", content=b"x").status_code == 404
