"""A real ``apiaryd`` process, configured only by ``OTEL_*`` in its environment, exports one trace
per message over OTLP/HTTP: its main turns tracing on, and the API, the router and its embedded
node's worker and keeper all put their spans into the trace of the request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.cluster import Apiaryd
from fakes.otlp_receiver import OtlpReceiver, running_receiver

CELL = "default"


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apiary.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": CELL}, "spec": spec}  # fmt: skip


@pytest.fixture
def apiaryd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Apiaryd, OtlpReceiver]]:
    with running_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
        server = Apiaryd(tmp_path / "data", extra=["--log-format", "json"]).start()
        try:
            yield server, receiver
        finally:
            server.stop()


def test_apiaryd_exports_the_trace_of_a_message(apiaryd: tuple[Apiaryd, OtlpReceiver]) -> None:
    server, receiver = apiaryd
    c = server.client(CELL)
    text = {"type": "stdin", "format": "text"}
    c.apply(obj("AgentSpec", "cat", {"runtime": {"command": ["cat"]}, "interface": text}))
    stages = [{"name": "echo", "agentRef": "cat", "replicas": 1}]
    c.apply(obj("Hive", "h", {"pattern": "pipeline", "stages": stages}))
    c.apply(obj("Session", "s", {"hiveRef": "h"}))
    auth = {"authorization": f"Bearer {server.token}"}
    session = f"{server.url}/api/v1/cells/{CELL}/sessions/s"
    deadline = time.monotonic() + 30
    while True:  # the drone may not be up yet: the message waits in the stage's queue
        sent = httpx.post(f"{session}/messages", json={"payload": "hi"}, headers=auth, timeout=10)
        if sent.status_code == 202 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sent.status_code == 202, sent.text
    final = None
    while final is None and time.monotonic() < deadline:
        items = httpx.get(f"{session}/messages", params={"wait": 2}, headers=auth, timeout=10)
        final = next((e for e in items.json()["items"] if e["kind"] == "final"), None)
    assert final is not None and final["message"]["payload"] == "hi"
    trace_id = final["message"]["traceparent"].split("-")[1]

    def complete(got: list) -> bool:  # type: ignore[type-arg]
        return {"route input", "send echo", "process echo", "invoke_agent echo",
                "route outcome"} <= {g.name for g in got if g.trace_id == trace_id}  # fmt: skip

    receiver.wait_for(complete, 15)
    spans = receiver.trace(trace_id)
    names = {g.name for g in spans}
    assert "POST /api/v1/cells/{cell}/sessions/{name}/messages" in names, names
    assert {g.service for g in spans} == {"apiaryd"}
    by_id = {g.span_id: g for g in spans}
    assert all(g.parent_id in by_id for g in spans if g.kind != "SERVER"), names
