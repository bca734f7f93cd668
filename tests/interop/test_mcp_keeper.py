"""Point 3 of issue 16, first half: MCP through the keeper.

A real apiaryd (embedded node), a test MCP server built with the ``mcp`` SDK (its own process,
Streamable HTTP) and an agent process that uses the ``mcp`` SDK's client against its keeper's
endpoint: the tool its AgentSpec allows is listed and called, the one it does not is refused,
the server's credential comes from a Secret (the agent never sees it), and both calls are in
the session's transcript (tool, arguments, result, latency); the
allowed one is a span in the message's trace.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from e2e.cluster import Apiaryd, is_ready, new_cell, run_session, wait_drones
from fakes.otlp_receiver import OtlpReceiver, running_receiver
from services import free_port

pytestmark = pytest.mark.slow
TOKEN = "s3cret-calc-token"
HERE = Path(__file__).parent


@pytest.fixture
def calc() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "mcp_calc.py"), str(port), TOKEN],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}/mcp"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(url, timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                pytest.fail("the test MCP server did not start")
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """An in-test OTLP receiver apiaryd exports its spans to (configured by OTEL_* only)."""
    with running_receiver() as got:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", got.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        yield got


def test_an_agent_calls_an_allowed_tool_through_its_keeper(
    tmp_path: Path, calc: str, receiver: OtlpReceiver
) -> None:
    server = Apiaryd(tmp_path / "data").start()
    try:
        cell = new_cell()
        with server.client(cell) as c:  # the Cell offers the MCP server to all its drones
            bearer = {"name": "Authorization", "prefix": "Bearer ",
                      "secretKeyRef": {"name": "calc", "key": "token"}}  # fmt: skip
            c.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell},
                      "spec": {"mcpServers": [{"name": "calc", "url": calc,
                                               "allowTools": ["add", "nap"],
                                               "timeoutSeconds": 1,
                                               "headersFrom": [bearer]}]}})  # fmt: skip
            c.create({"apiVersion": "apiary.io/v1", "kind": "Secret",
                      "metadata": {"name": "calc", "namespace": cell},
                      "stringData": {"token": TOKEN}})  # fmt: skip
            c.create(
                {
                    "apiVersion": "apiary.io/v1",
                    "kind": "AgentSpec",
                    "metadata": {"name": "tooluser", "namespace": cell},
                    "spec": {
                        "runtime": {"command": [sys.executable, str(HERE / "mcp_agent.py")]},
                        "interface": {"type": "stdin", "format": "waggle"},
                        "resources": {"requests": {"cpu": 10, "memory": 8_000_000}},
                    },
                }
            )
            c.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                      "metadata": {"name": "h", "namespace": cell},
                      "spec": {"pattern": "pipeline",
                               "stages": [{"name": "use", "agentRef": "tooluser"}]}})  # fmt: skip
            wait_drones(c, cell, lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 30, "Ready")
            time.sleep(0.2)
            answer = run_session(c, cell, "h", "hello")
            assert answer["tools"] == ["calc.add", "calc.nap"]  # shout is not allowed: not listed
            assert answer["sum"] == "5"
            assert "is not in its allowTools" in answer["refused"]
            assert answer["nap"] == [True, "MCP server 'calc' did not answer within 1s"]
            (session,) = [s["metadata"]["name"] for s in c.list("Session", cell)["items"]]
            path = f"/api/v1/cells/{cell}/sessions/{session}/transcript"
            items = c.request("GET", path).body["items"]
        calls = [e for e in items if e["kind"] == "event" and "toolCall" in e["message"]["payload"]]
        add, nap, shout = (e["message"]["payload"]["toolCall"] for e in calls)
        assert nap["tool"] == "nap" and nap["isError"] and 900 < nap["latencyMs"] < 4000
        assert (add["server"], add["tool"], add["arguments"]) == ("calc", "add", {"a": 2, "b": 3})
        assert add["result"]["content"][0]["text"] == "5" and not add["isError"]
        assert add["latencyMs"] > 0 and calls[0]["stage"] == "use" and calls[0]["drone"]
        assert shout["tool"] == "shout" and shout["isError"] and "allowTools" in shout["error"]
        # and the call is a span in the message's trace (the agent passed its traceparent on)
        trace_id = items[0]["message"]["traceparent"].split("-")[1]

        def calls_of(spans: list) -> dict:  # type: ignore[type-arg]
            return {g.attributes["mcp.tool"]: g for g in spans
                    if g.name == "mcp.tools/call" and g.trace_id == trace_id}  # fmt: skip

        spans = calls_of(receiver.wait_for(lambda got: len(calls_of(got)) == 2, 15))
        assert spans["add"].attributes["mcp.server"] == "calc"
        assert spans["add"].attributes["mcp.is_error"] is False
        assert spans["nap"].attributes["mcp.is_error"] is True
    finally:
        server.stop()


async def test_the_first_listing_does_not_spend_the_servers_timeout_importing_the_sdk(
    calc: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mcp SDK's first import takes about a second of CPU: it happens on a thread (the
    event loop keeps turning) and before ``timeoutSeconds`` starts, so a server that answers in
    milliseconds is listed even when its timeout is shorter than the import."""
    import asyncio

    from apiary.mcp import keeper

    real, imported = keeper._sdk, []

    def slow_first_import() -> tuple[object, object, object]:
        if not imported:
            time.sleep(1.5)
            imported.append(True)
            monkeypatch.setattr(keeper, "_SDK_MODULE", "mcp.client.streamable_http")
        return real()

    monkeypatch.setattr(keeper, "_sdk", slow_first_import)
    monkeypatch.setattr(keeper, "_SDK_MODULE", "not.imported.yet")  # as if never imported
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    spec = {"mcpServers": [{"name": "calc", "url": calc, "allowTools": ["add"],
                            "timeoutSeconds": 1, "headers": bearer}]}  # fmt: skip
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    ticking = asyncio.create_task(tick())
    try:
        tools = await keeper.KeeperTools(None, "c", "d", spec, None, None).list_tools()  # type: ignore[arg-type]
    finally:
        ticking.cancel()
    assert [t["name"] for t in tools] == ["calc.add"]
    assert ticks > 50  # the loop was not held for the import
