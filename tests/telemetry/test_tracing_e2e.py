"""One session message, one trace: a whole Apiary (tests/stack.py) exports its spans over OTLP/HTTP
to a real receiver on loopback (tests/fakes/otlp_receiver.py), configured only by the standard
``OTEL_*`` variables, as an operator would.

The hive is a 3-stage pipeline: a plain text filter, an agent that asks the node's LLM gateway
(the fake OpenAI-compatible provider), and a Python agent with its own OpenTelemetry SDK
(tests/fakes/otel_agent.py). The receiver must get one trace holding the API request, the
router's steps, every stage's dispatch, queue wait, processing and keeper delivery, the gateway's
``chat`` span with ``gen_ai.*`` attributes, and the agent's own span as a child of its delivery.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from apiary.telemetry import tracing
from fakes.openai_server import running_fake_openai
from fakes.otlp_receiver import Got, OtlpReceiver, running_receiver
from stack import TOKEN, agentspec, hive, is_ready, running_stack, session

ROOT = Path(__file__).parents[2]
LLM_AGENT = [sys.executable, str(ROOT / "examples/agents/llm_agent.py")]
OTEL_AGENT = [sys.executable, str(ROOT / "tests/fakes/otel_agent.py")]
UPPER = [sys.executable, "-u", "-c", "import sys\nfor l in sys.stdin: print(l.strip().upper())"]


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with running_receiver() as r:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "apiary-test")
        assert tracing.init_tracing("apiaryd")
        try:
            yield r
        finally:
            tracing.shutdown_tracing()


def one(spans: list[Got], name: str) -> Got:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, sorted(s.name for s in spans))
    return found[0]


async def test_one_trace_from_the_api_through_three_stages_to_the_agents_own_span(
    tmp_path: Path, receiver: OtlpReceiver
) -> None:
    cell = f"otel-{os.getpid()}"
    async with running_fake_openai() as fake, running_stack(tmp_path, cell, messaging=True) as s:
        assert s.journal is not None
        await s.apply({
            "apiVersion": "apiary.io/v1", "kind": "Secret",
            "metadata": {"name": "provider", "namespace": cell},
            "stringData": {"baseUrl": fake.url, "apiKey": fake.api_key},
        })  # fmt: skip
        await s.apply(agentspec(cell, "upper", UPPER))
        writer = agentspec(cell, "writer", LLM_AGENT, fmt="waggle")
        writer["spec"]["llm"] = {"provider": {"secretRef": {"name": "provider"}},
                                 "model": "fake-small"}  # fmt: skip
        await s.apply(writer)
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "otel-agent"}
        tracer = agentspec(cell, "tracer", OTEL_AGENT, fmt="waggle")
        tracer["spec"]["runtime"]["env"] = [{"name": k, "value": v} for k, v in env.items()]
        await s.apply(tracer)
        stages = [("shout", "upper", 1), ("write", "writer", 1), ("trace", "tracer", 1)]
        await s.apply(hive(cell, "h", stages))
        await s.wait(lambda ds: len(ds) == 3 and all(map(is_ready, ds)), 30, "3 drones ready")
        await s.store.create(session(cell, "s", "h"))
        async with httpx.AsyncClient(base_url=s.url) as http:
            answer = await http.post(
                f"/api/v1/cells/{cell}/sessions/s/messages",
                json={"payload": "hello"},
                headers={"authorization": f"Bearer {TOKEN}"},
            )
        assert answer.status_code < 300, answer.text
        key = f"{cell}/s"
        for _ in range(300):
            finals = await s.journal.read(key, kinds={"final", "error"})
            if finals:
                break
            await asyncio.sleep(0.05)
        assert finals and finals[0].kind == "final", finals
        result = finals[0].message["payload"]
        assert result["seen"] == {"response": "echo: HELLO", "confidence": 0.9}

    tracing.force_flush()
    trace_id = result["traceId"]  # the agent's own span is in the trace Apiary started
    spans = receiver.wait_for(
        lambda got: sum(g.trace_id == trace_id and g.name.startswith("route") for g in got) >= 4
    )
    spans = receiver.trace(trace_id)
    names = sorted(g.name for g in spans)
    by_id = {g.span_id: g for g in spans}

    api = next(g for g in spans if g.kind == "SERVER")
    assert api.name == "POST /api/v1/cells/{cell}/sessions/{name}/messages", names
    assert api.parent_id == "" and api.service == "apiary-test"
    assert api.attributes["http.response.status_code"] == answer.status_code
    for g in spans:  # one tree: every other span's parent is in the trace
        assert g is api or g.parent_id in by_id, (g.name, names)
    route_input = one(spans, "route input")
    assert route_input.parent_id == api.span_id
    assert route_input.attributes["gen_ai.conversation.id"] == key

    for stage in ("shout", "write", "trace"):
        send, wait = one(spans, f"send {stage}"), one(spans, f"wait {stage}")
        process = one(spans, f"process {stage}")
        invoke = one(spans, f"invoke_agent {stage}")
        assert send.kind == "PRODUCER" and process.kind == "CONSUMER"
        assert wait.parent_id == process.parent_id == send.span_id
        assert by_id[send.parent_id].name.startswith("route")
        assert invoke.parent_id == process.span_id
        assert invoke.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert invoke.attributes["gen_ai.agent.name"] == stage
        assert invoke.attributes["gen_ai.conversation.id"] == key
        assert process.attributes["apiary.stage"] == stage
        assert process.attributes["apiary.hive"] == "h"
        assert process.attributes["apiary.cell"] == cell
        assert process.attributes["apiary.queue_wait_ms"] >= 0
    outcomes = [g for g in spans if g.name == "route outcome"]
    assert len(outcomes) == 3
    assert {by_id[g.parent_id].name for g in outcomes} == {
        "process shout", "process write", "process trace"
    }  # fmt: skip

    chat = one(spans, "chat fake-small")
    assert chat.kind == "CLIENT"
    assert by_id[chat.parent_id].name == "invoke_agent write"
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "openai"
    assert chat.attributes["gen_ai.request.model"] == "fake-small"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 10
    assert chat.attributes["gen_ai.usage.output_tokens"] == 5
    assert chat.attributes["gen_ai.conversation.id"] == key
    (call,) = fake.chat_calls()  # the provider is handed the trace too
    assert call.headers["traceparent"].startswith(f"00-{trace_id}-{chat.span_id}-")

    own = one(spans, "otel_agent.answer")
    assert own.service == "otel-agent"
    assert own.parent_id == one(spans, "invoke_agent trace").span_id
