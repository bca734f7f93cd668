"""Point 3 of issue 16, second half: stdio MCP servers (``mcpServers[].command``).

A real apiaryd (embedded node, run as root in CI so drones really run as ``nobody``) and an agent
process that uses the ``mcp`` SDK's client against its keeper: its AgentSpec lists a stdio server
built with the ``mcp`` SDK (tests/interop/mcp_stdio_calc.py), which the node starts for the drone
on first use, as the drone's user, with an env value from a Secret. The allowed tools are listed
and called, the one outside ``allowTools`` is refused, the calls are in the transcript; the same
server process answers the next session (one session kept open), a call the agent hangs up on is
cancelled and journaled so, and the server is gone once the drone is deleted.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import Apiaryd, agent_processes, is_ready, new_cell, run_session, wait_drones
from fakes.otlp_receiver import OtlpReceiver, running_receiver

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
NOBODY = 65534


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """An in-test OTLP receiver apiaryd exports its spans to (configured by OTEL_* only)."""
    with running_receiver() as got:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", got.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        yield got


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def _tool_calls(c: Any, cell: str, session: str) -> list[dict[str, Any]]:
    items = c.request("GET", f"/api/v1/cells/{cell}/sessions/{session}/transcript").body["items"]
    return [e["message"]["payload"]["toolCall"] for e in items
            if e["kind"] == "event" and "toolCall" in e["message"]["payload"]]  # fmt: skip


def test_an_agent_calls_a_stdio_server_the_node_runs_as_the_drone(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    server = Apiaryd(tmp_path / "data").start()
    try:
        cell = new_cell()
        with server.client(cell) as c:
            c.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell},
                      "spec": {}})  # fmt: skip
            c.create({"apiVersion": "apiary.io/v1", "kind": "Secret",
                      "metadata": {"name": "calc", "namespace": cell},
                      "stringData": {"greeting": "hi from a Secret"}})  # fmt: skip
            greeting = {
                "name": "CALC_GREETING",
                "valueFrom": {"secretKeyRef": {"name": "calc", "key": "greeting"}},
            }
            calc = {"name": "calc", "command": [sys.executable, str(HERE / "mcp_stdio_calc.py")],
                    "env": [greeting], "allowTools": ["add", "whoami", "nap"],
                    "timeoutSeconds": 30}  # fmt: skip
            c.create(
                {
                    "apiVersion": "apiary.io/v1",
                    "kind": "AgentSpec",
                    "metadata": {"name": "tooluser", "namespace": cell},
                    "spec": {
                        "runtime": {"command": [sys.executable, str(HERE / "mcp_stdio_agent.py")]},
                        "interface": {"type": "stdin", "format": "waggle"},
                        "resources": {"requests": {"cpu": 10, "memory": 8_000_000}},
                        "mcpServers": [calc],
                    },
                }
            )
            c.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                      "metadata": {"name": "h", "namespace": cell},
                      "spec": {"pattern": "pipeline",
                               "stages": [{"name": "use", "agentRef": "tooluser"}]}})  # fmt: skip
            wait_drones(c, cell, lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 30, "Ready")
            (agent,) = agent_processes(cell)  # the server is started on first use, not before
            answer = run_session(c, cell, "h", "hello")
            assert answer["tools"] == ["calc.add", "calc.nap", "calc.whoami"]
            assert answer["sum"] == "5"
            assert "is not in its allowTools" in answer["refused"]
            who = answer["who"]
            pid = who["pid"]
            assert who["greeting"] == "hi from a Secret" and not who["keeperToken"]
            assert _uid_of(pid) == _uid_of(agent.pid)  # the drone's identity, not the node's
            if os.geteuid() == 0:
                assert _uid_of(pid) == who["uid"] == NOBODY and who["groups"] == []
            (first,) = [s["metadata"]["name"] for s in c.list("Session", cell)["items"]]
            add, whoami, shout = _tool_calls(c, cell, first)
            assert (add["server"], add["tool"]) == ("calc", "add")
            assert add["arguments"] == {"a": 2, "b": 3}
            assert add["result"]["content"][0]["text"] == "5" and not add["isError"]
            assert add["stage"] == "use" and add["drone"] and add["latencyMs"] > 0
            assert whoami["result"]["structuredContent"]["pid"] == pid
            assert shout["isError"] and "allowTools" in shout["error"]
            path = f"/api/v1/cells/{cell}/sessions/{first}/transcript"
            trace_id = c.request("GET", path).body["items"][0]["message"]["traceparent"]
            trace_id = trace_id.split("-")[1]

            def calls_of(spans: list) -> dict:  # type: ignore[type-arg]
                return {g.attributes["mcp.tool"]: g for g in spans
                        if g.name == "mcp.tools/call" and g.trace_id == trace_id}  # fmt: skip

            spans = calls_of(receiver.wait_for(lambda got: len(calls_of(got)) == 2, 15))
            assert spans["add"].attributes["mcp.transport"] == "stdio"
            assert spans["add"].attributes["mcp.command"] == sys.executable
            assert spans["add"].attributes["mcp.is_error"] is False

            # The next session: the same process and session; a call the agent hangs up on
            # is cancelled upstream and journaled so, and the server goes on answering.
            again = run_session(c, cell, "h", "hangup")
            assert again["who"]["pid"] == pid and again["hungUp"]
            (second,) = [s["metadata"]["name"] for s in c.list("Session", cell)["items"]
                         if s["metadata"]["name"] != first]  # fmt: skip
            deadline = time.monotonic() + 10
            while not any(t["tool"] == "nap" for t in _tool_calls(c, cell, second)):
                assert time.monotonic() < deadline, _tool_calls(c, cell, second)
                time.sleep(0.1)
            (nap,) = [t for t in _tool_calls(c, cell, second) if t["tool"] == "nap"]
            assert nap["isError"] and "hung up" in nap["error"] and nap["latencyMs"] < 10_000
            assert run_session(c, cell, "h", "once more")["who"]["pid"] == pid

            c.delete("Hive", "h", cell)  # the drone goes, and its server with it
            deadline = time.monotonic() + 30
            while not _gone(pid) or agent_processes(cell):
                assert time.monotonic() < deadline, f"server {pid} outlived its drone"
                time.sleep(0.1)
    finally:
        server.stop()
