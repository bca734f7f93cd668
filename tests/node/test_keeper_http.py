"""The keeper over the ``http`` interface, end to end with real agent processes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from apiary.errors import Invalid
from apiary.node.interfaces import InterfaceConfig, parse_http_body
from apiary.node.keeper import (
    AgentCrashed,
    AgentNotReady,
    AgentProtocolError,
    Keeper,
    ResponseTimeout,
)
from apiary.waggle import Message
from services import free_port

AGENTS = Path(__file__).resolve().parents[2] / "examples" / "agents"
Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


def serve_code(handler: str) -> str:
    return f"from apiary.agent.http import serve\n{handler}\nserve(handle)\n"


async def test_http_echo_end_to_end(spawn: Spawn) -> None:
    port = free_port()
    keeper = Keeper({"type": "http", "port": port, "concurrency": 4})
    proc = await spawn(sys.executable, str(AGENTS / "http_echo.py"), env={"PORT": str(port)})
    await keeper.attach(proc)
    assert not keeper.ready  # http agents are ready only after their health check
    await keeper.start(timeout=20)
    assert keeper.ready and await keeper.probe()
    msgs = [Message({"n": i}, session_id="s") for i in range(40)]
    results = await asyncio.gather(*(keeper.deliver(m, timeout=10) for m in msgs))
    for msg, [out] in zip(msgs, results, strict=True):
        assert (out.payload, out.correlation_id, out.session_id) == (msg.payload, msg.id, "s")
    assert keeper.stats.delivered == 40
    await keeper.stop()
    assert not keeper.ready


async def test_several_outputs_and_errors_over_http(spawn: Spawn) -> None:
    port = free_port()
    handler = (
        "def handle(msg, ctx):\n"
        "    if msg.payload == 'fail':\n"
        "        raise RuntimeError('asked to fail')\n"
        "    ctx.emit('first', 'event')\n"
        "    return ['second', 'third']\n"
    )
    keeper = Keeper({"type": "http", "port": port, "messagePath": "/in", "healthPath": "/ok"})
    env = {"APIARY_MESSAGE_PATH": "/in", "APIARY_HEALTH_PATH": "/ok", "PORT": str(port)}
    await keeper.attach(await spawn(sys.executable, "-c", serve_code(handler), env=env))
    await keeper.start(timeout=20)
    msg = Message("go")
    outs = await keeper.deliver(msg, timeout=10)
    assert [(o.type, o.payload) for o in outs] == [
        ("event", "first"),
        ("result", "second"),
        ("result", "third"),
    ]
    assert all(o.correlation_id == msg.id for o in outs)
    [err] = await keeper.deliver(Message("fail"), timeout=10)
    assert err.type == "error" and err.payload == {
        "error": "RuntimeError",
        "message": "asked to fail",
    }


async def test_http_timeout_and_crash_then_restart(spawn: Spawn) -> None:
    port = free_port()
    handler = (
        "import os, time\n"
        "def handle(msg):\n"
        "    if msg.payload == 'die':\n"
        "        os._exit(4)\n"
        "    time.sleep(float(msg.payload))\n"
        "    return 'slept'\n"
    )
    keeper = Keeper({"type": "http", "port": port, "concurrency": 2})
    code = serve_code(handler)
    await keeper.attach(await spawn(sys.executable, "-c", code, env={"PORT": str(port)}))
    await keeper.start(timeout=20)
    with pytest.raises(ResponseTimeout):
        await keeper.deliver(Message("1.0"), timeout=0.1)
    [out] = await keeper.deliver(Message("0"), timeout=10)
    assert out.payload == "slept"

    slow = asyncio.create_task(keeper.deliver(Message("30"), timeout=60))
    await asyncio.sleep(0.1)
    with pytest.raises(AgentCrashed):
        await keeper.deliver(Message("die"), timeout=10)
    with pytest.raises(AgentCrashed) as info:
        await slow
    assert info.value.exit_code == 4 and "code 4" in str(info.value)
    assert not keeper.ready and keeper.stats.crashes == 2
    with pytest.raises(AgentCrashed):
        await keeper.deliver(Message("0"), timeout=1)

    await keeper.attach(await spawn(sys.executable, "-c", code, env={"PORT": str(port)}))
    await keeper.start(timeout=20)
    [out] = await keeper.deliver(Message("0"), timeout=10)
    assert out.payload == "slept"


async def test_start_fails_clearly(spawn: Spawn) -> None:
    keeper = Keeper({"type": "http", "port": free_port()})
    with pytest.raises(AgentNotReady):
        await keeper.start(timeout=1)
    await keeper.attach(await spawn("sleep", "30"))  # never listens
    with pytest.raises(AgentNotReady, match="healthz"):
        await keeper.start(timeout=0.3)
    await keeper.attach(await spawn(sys.executable, "-c", "raise SystemExit(2)"))
    with pytest.raises(AgentCrashed, match="code 2"):
        await keeper.start(timeout=20)
    no_port = Keeper({"type": "http"})
    with pytest.raises(AgentNotReady, match="port"):
        await no_port.attach(await spawn("sleep", "30"))


ASKED = Message("q")


def test_parse_http_body_rules() -> None:
    assert parse_http_body(204, b"", ASKED) == []
    assert parse_http_body(200, b"  ", ASKED) == []
    [one] = parse_http_body(200, b'{"type": "event", "payload": 1}', ASKED)
    assert one.type == "event" and one.correlation_id == ASKED.id
    two = parse_http_body(
        200, b'[{"type": "result", "payload": 1}, {"version": "1.0", "payload": 2}]', ASKED
    )
    assert [m.payload for m in two] == [1, 2]
    [bare] = parse_http_body(200, b"[1, 2]", ASKED)
    assert bare.payload == [1, 2] and bare.type == "result"
    [text] = parse_http_body(200, b"plain words", ASKED)
    assert text.payload == "plain words"
    with pytest.raises(AgentProtocolError, match="HTTP 500"):
        parse_http_body(500, b"Internal Server Error", ASKED)
    with pytest.raises(AgentProtocolError, match="type"):
        parse_http_body(200, b'{"type": "shout", "payload": 1}', ASKED)


def test_interface_config_validation_names_fields() -> None:
    assert InterfaceConfig.from_spec(None) == InterfaceConfig()
    cfg = InterfaceConfig.from_spec({"type": "http", "port": 9000, "concurrency": 3})
    assert (cfg.type, cfg.port, cfg.concurrency, cfg.health_path) == ("http", 9000, 3, "/healthz")
    with pytest.raises(Invalid) as info:
        InterfaceConfig.from_spec(
            {"type": "grpc", "format": "xml", "port": 70000, "concurrency": 0, "healthPath": "up"}
        )
    fields = {d.field for d in info.value.details}
    assert fields == {
        "spec.interface.type",
        "spec.interface.format",
        "spec.interface.port",
        "spec.interface.concurrency",
        "spec.interface.healthPath",
    }
    with pytest.raises(Invalid, match=r"spec\.interface"):
        InterfaceConfig.from_spec(["stdin"])  # type: ignore[arg-type]
    with pytest.raises(Invalid):
        InterfaceConfig.from_spec({"type": "http", "format": "text"})
