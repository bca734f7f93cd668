"""Scaled out, a message is still one trace: two apiaryd replicas on one PostgreSQL database and
one NATS JetStream stream, one ``apiaryd node`` process running the drones, every process
exporting OTLP/HTTP to one receiver (tests/fakes/otlp_receiver.py), configured only by ``OTEL_*``.

Messages go in through replica A's API; the two replicas take outcomes from one JetStream
consumer group, so some router steps of a session run on B. Of the sessions sent, one whose
``route outcome`` spans come from both replicas (told apart by ``service.instance.id``, host:pid)
must be one unbroken tree: A's API span at the root, every stage's ``send`` from a replica, its
``wait`` / ``process`` / ``invoke_agent`` from the node, and every parent in the trace — the
``traceparent`` crossed NATS headers from A to the node to B and back.

Every session must get its final answer: a replica that decided an outcome was a duplicate from
its own cached state, after the other replica had committed the step that opened the dispatch,
used to stall flows here (``STALLED``; fixed in Router._run).
"""

from __future__ import annotations

import base64
import contextlib
import secrets
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import fakes.otlp_receiver as otlp
from e2e.cluster import (
    ECHO,
    Apiaryd,
    NodeProc,
    agentspec,
    drop_stale_test_streams,
    n_ready,
    start_node,
    wait_drones,
)
from services import fresh_postgres_url, require_nats, require_postgres

pytestmark = pytest.mark.slow

CELL = f"trace-{uuid.uuid4().hex[:8]}"
STAGES = ("one", "two", "three")
SESSIONS = 6
API = "POST /api/v1/cells/{cell}/sessions/{name}/messages"
STALLED = (
    "sessions without a final answer — a replica that decides an outcome is a duplicate from a "
    "stale cached state (Router._run must decide again on the journal) stalls them: {}"
)


@dataclass
class Span(otlp.Got):
    """A received span with its resource (the receiver's ``Got`` keeps only the service)."""

    resource: dict[str, Any] = field(default_factory=dict)


_decode = otlp.decode


def decode(body: bytes) -> list[otlp.Got]:
    request = otlp.ExportTraceServiceRequest()
    request.ParseFromString(body)
    out: list[otlp.Got] = []
    spans = iter(_decode(body))
    for rs in request.resource_spans:
        resource = {kv.key: otlp.value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for _ in ss.spans:
                got = next(spans)
                out.append(Span(**vars(got), resource=resource))
    return out


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[otlp.OtlpReceiver]:
    monkeypatch.setattr(otlp, "decode", decode)  # the handler looks it up per request
    with otlp.running_receiver() as r:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
        for name in ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER"):
            monkeypatch.delenv(name, raising=False)
        # Secrets written by one replica must be readable by the other: one key for both.
        monkeypatch.setenv("APIARY_SECRET_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
        yield r


def obj(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apiary.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": CELL}, "spec": spec}  # fmt: skip


def instance(server: Apiaryd | NodeProc) -> str:
    assert server.proc is not None
    return f"{socket.gethostname()}:{server.proc.pid}"


async def test_one_trace_across_two_replicas_and_a_node(
    tmp_path: Path, receiver: otlp.OtlpReceiver
) -> None:
    require_postgres()
    nats = require_nats()
    await drop_stale_test_streams(nats)
    stream = f"E2E{int(time.time() * 1000) % 10**9}"
    try:
        async with fresh_postgres_url() as pg:
            bus = f"{nats}?stream={stream}"  # apiary.>: the router takes apiary.*.*.out
            flags = ["--store", pg, "--bus", bus, "--no-local-node"]
            with contextlib.ExitStack() as stack:
                a = Apiaryd(tmp_path / "a", flags).start()
                stack.callback(a.stop)
                b = Apiaryd(tmp_path / "b", flags).start()
                stack.callback(b.stop)
                node = start_node(a, "trace-node", tmp_path / "node", "--bus", flags[3])
                stack.callback(node.stop)
                traces, stalled = run_sessions(a)
    finally:
        import nats as nats_py

        nc = await nats_py.connect(nats)
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(stream)
        await nc.close()
    # Stopped: every process flushed its spans at exit.
    replicas = {instance(a): "A", instance(b): "B"}
    node_instance = instance(node)

    def outcome_replicas(spans: list[otlp.Got], trace_id: str) -> set[str]:
        return {replicas.get(_instance(g), "?") for g in spans
                if g.trace_id == trace_id and g.name == "route outcome"}  # fmt: skip

    def complete(spans: list[otlp.Got]) -> bool:
        per = {t: sum(g.trace_id == t and g.name == "route outcome" for g in spans) for t in traces}
        return all(n == len(STAGES) for n in per.values())

    spans = receiver.wait_for(complete, 10)
    mixed = [t for t in traces if outcome_replicas(spans, t) == {"A", "B"}]
    seen = {t: sorted(outcome_replicas(spans, t)) for t in traces}
    assert not stalled, STALLED.format(stalled)
    assert mixed, f"no session had outcomes routed on both replicas: {seen}"

    def senders(t: str) -> int:  # prefer a trace whose dispatches, too, left from both
        return len({_instance(g) for g in receiver.trace(t) if g.name.startswith("send ")})

    trace = receiver.trace(max(mixed, key=senders))
    names = sorted(g.name for g in trace)
    by_id = {g.span_id: g for g in trace}
    where = {g.span_id: _where(g, replicas, node_instance) for g in trace}

    (root,) = [g for g in trace if g.parent_id == ""]
    assert root.kind == "SERVER" and root.name == API, names
    assert where[root.span_id] == "A"  # the message went in through A's API
    for g in trace:  # unbroken: every other span's parent is in the trace
        assert g is root or g.parent_id in by_id, (g.name, where[g.span_id], names)

    (route_input,) = [g for g in trace if g.name == "route input"]
    assert route_input.parent_id == root.span_id and where[route_input.span_id] == "A"
    outcomes = [g for g in trace if g.name == "route outcome"]
    assert {where[g.span_id] for g in outcomes} == {"A", "B"}
    assert sorted(by_id[g.parent_id].name for g in outcomes) == sorted(
        f"process {s}" for s in STAGES
    )
    for stage in STAGES:
        (send,) = [g for g in trace if g.name == f"send {stage}"]
        (wait,) = [g for g in trace if g.name == f"wait {stage}"]
        (process,) = [g for g in trace if g.name == f"process {stage}"]
        (invoke,) = [g for g in trace if g.name == f"invoke_agent {stage}"]
        assert where[send.span_id] in ("A", "B") and send.kind == "PRODUCER"
        assert by_id[send.parent_id].name.startswith("route ")
        assert where[by_id[send.parent_id].span_id] == where[send.span_id]
        for g in (wait, process, invoke):
            assert where[g.span_id] == "node", (g.name, where[g.span_id])
            assert g.resource["apiary.node"] == "trace-node"  # type: ignore[attr-defined]
        assert wait.parent_id == process.parent_id == send.span_id  # across NATS: router → node
        assert invoke.parent_id == process.span_id
    # the last outcome's step ends the session: nothing sent after it
    assert len([g for g in trace if g.name.startswith("send ")]) == len(STAGES)


def _instance(g: otlp.Got) -> str:
    return str(getattr(g, "resource", {}).get("service.instance.id", ""))


def _where(g: otlp.Got, replicas: dict[str, str], node_instance: str) -> str:
    inst = _instance(g)
    if inst == node_instance:
        return "node"
    return replicas.get(inst, f"? {g.service} {inst}")


def run_sessions(a: Apiaryd) -> tuple[list[str], list[Any]]:
    """Sessions through A's API, one message each: the trace id of each final answer, and the
    sessions that got none (with the kinds of their journal entries)."""
    c = a.client(CELL)
    c.apply({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": CELL}, "spec": {}})
    c.apply(agentspec(CELL, "echo", ECHO))
    stages = [{"name": s, "agentRef": "echo", "replicas": 1} for s in STAGES]
    c.apply(obj("Hive", "h", {"pattern": "pipeline", "stages": stages}))
    wait_drones(c, CELL, n_ready(len(STAGES)), 30, "the node's drones ready")
    auth = {"authorization": f"Bearer {a.token}"}
    names = [f"s{i}" for i in range(SESSIONS)]
    with httpx.Client(base_url=f"{a.url}/api/v1/cells/{CELL}", headers=auth, timeout=10) as http:
        for name in names:
            c.apply(obj("Session", name, {"hiveRef": "h"}))
        for name in names:
            sent = http.post(f"/sessions/{name}/messages", json={"payload": "hi"})
            assert sent.status_code == 202, sent.text
        traces, stalled = [], []
        deadline = time.monotonic() + 15
        for name in names:
            while True:  # each session is read at least once, even past the deadline
                items = http.get(f"/sessions/{name}/messages", params={"wait": 2}).json()["items"]
                final = next((e for e in items if e["kind"] == "final"), None)
                if final is not None or time.monotonic() > deadline:
                    break
            if final is None:
                stalled.append((name, [f"{e['kind']} {e.get('stage') or ''}" for e in items][-2:]))
                continue
            assert final["message"]["payload"] == "Echo: Echo: Echo: hi"
            traces.append(final["message"]["traceparent"].split("-")[1])
    return traces, stalled
