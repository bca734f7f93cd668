"""An http agent gets the trace context as the W3C ``traceparent`` request header as well as in the
Waggle body: its HTTP server's own OpenTelemetry instrumentation continues the trace unchanged.
With tracing on, both name the keeper's ``invoke_agent`` span; with it off, the message's own."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from apiary.node.keeper import Keeper
from apiary.telemetry import tracing
from apiary.waggle import Message

AGENT = """
import http.server, json, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        out = json.dumps({"header": self.headers.get("traceparent"),
                          "body": body.get("traceparent")}).encode()
        self.send_response(200); self.send_header("content-length", str(len(out)))
        self.end_headers(); self.wfile.write(out)
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""
GIVEN = "00-" + "c" * 32 + "-" + "d" * 16 + "-01"


@pytest.fixture
async def keeper() -> AsyncIterator[Keeper]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", AGENT, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PORT": str(port)},
    )  # fmt: skip
    k = Keeper({"type": "http", "port": port}, name="c1/drone-a")
    try:
        await k.attach(proc)
        await k.start(timeout=20)
        yield k
    finally:
        await k.stop()
        proc.kill()
        await proc.wait()
        tracing.shutdown_tracing()


async def test_tracing_off_the_messages_own_traceparent_is_the_header(keeper: Keeper) -> None:
    (out,) = await keeper.deliver(Message("hi", traceparent=GIVEN), timeout=10)
    assert out.payload == {"header": GIVEN, "body": GIVEN}
    (out,) = await keeper.deliver(Message("no trace"), timeout=10)
    assert out.payload == {"header": None, "body": None}


async def test_tracing_on_the_agent_is_handed_the_keepers_span(keeper: Keeper) -> None:
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracing.install(provider)
    (out,) = await keeper.deliver(Message("hi", traceparent=GIVEN, session_id="c1/s"), timeout=10)
    (span,) = exported.get_finished_spans()
    assert span.name == "invoke_agent drone-a"
    assert span.attributes is not None
    assert span.attributes["gen_ai.conversation.id"] == "c1/s"
    assert span.attributes["gen_ai.agent.id"] == "c1/drone-a"
    ctx = span.get_span_context()
    assert span.parent is not None and f"{span.parent.span_id:016x}" == "d" * 16
    mine = f"00-{'c' * 32}-{ctx.span_id:016x}-"
    assert out.payload["header"].startswith(mine) and out.payload["body"] == out.payload["header"]
