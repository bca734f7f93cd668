"""Tracing's switches and plumbing: off (and free) without ``OTEL_*``, the W3C ``traceparent`` in
and out, the http agent's header, and log lines inside a traced API request carrying the trace
id of the span the receiver got."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog

from apiary.api.metrics import ApiMetrics
from apiary.api.middleware import ApiMiddleware
from apiary.logging import configure_logging, get_logger
from apiary.telemetry import tracing
from fakes.otlp_receiver import OtlpReceiver, running_receiver

OTEL_VARS = (
    "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES",
)  # fmt: skip


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    yield monkeypatch
    tracing.shutdown_tracing()


@pytest.fixture
def receiver(clean_env: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    with running_receiver() as r:
        clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.url)
        yield r
        tracing.shutdown_tracing()


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, False),
    ],
)
def test_the_environment_turns_tracing_on(env: dict[str, str], on: bool) -> None:
    assert tracing.wanted(env) is on


def test_off_without_otel_variables(clean_env: pytest.MonkeyPatch) -> None:
    assert tracing.init_tracing("apiaryd") is False
    assert tracing.TRACER is None
    assert tracing.current_trace_fields() is None


def test_service_name_and_grpc_from_the_environment(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    clean_env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    clean_env.setenv("OTEL_SERVICE_NAME", "my-apiary")
    assert tracing.init_tracing("apiary-node", node="node-a")
    provider: Any = tracing._PROVIDER
    assert provider.resource.attributes["service.name"] == "my-apiary"
    assert provider.resource.attributes["apiary.node"] == "node-a"
    (processor,) = provider._active_span_processor._span_processors
    assert "grpc" in type(processor._batch_processor._exporter).__module__


def test_traceparent_in_and_out(clean_env: pytest.MonkeyPatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import get_current_span

    assert tracing.context_from(None) is None
    for bad in ("", "junk", "00-" + "0" * 32 + "-" + "1" * 16 + "-01", "00-abc-def-01"):
        assert tracing.context_from(bad) is None, bad
    header = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    ctx = get_current_span(tracing.context_from(header)).get_span_context()
    assert (f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}", ctx.is_remote) == (
        "a" * 32,
        "b" * 16,
        True,
    )
    tracing.install(TracerProvider())
    assert tracing.TRACER is not None
    span = tracing.TRACER.start_span("child", tracing.context_from(header))
    out = tracing.traceparent(span)
    assert out is not None and out.startswith("00-" + "a" * 32 + "-")
    assert out.split("-")[2] != "b" * 16
    span.end()


class _Anyone:
    async def authenticate(self, header: str | None) -> str:
        return "someone"


async def test_log_lines_inside_a_traced_request_carry_its_trace_id(
    receiver: OtlpReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(json=True, level="info")
        assert tracing.init_tracing("apiaryd")

        async def app(scope: Any, receive: Any, send: Any) -> None:
            logging.getLogger("apiary.router").warning("stdlib line in the request")
            get_logger("apiary.api").info("structlog line in the request", cell="c1")
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})

        wrapped = ApiMiddleware(app, _Anyone(), ApiMetrics())  # type: ignore[arg-type]
        transport = httpx.ASGITransport(app=wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/api/v1/things")).status_code == 200
        logging.getLogger("apiary.router").warning("outside any span")
        tracing.force_flush()
        (span,) = receiver.wait_for(lambda got: len(got) >= 1)
        assert span.kind == "SERVER" and span.name == "GET"
        lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
        inside = [x for x in lines if "in the request" in x["event"]]
        assert len(inside) == 2, lines
        for line in inside:
            assert (line["trace_id"], line["span_id"]) == (span.trace_id, span.span_id)
        (outside,) = [x for x in lines if x["event"] == "outside any span"]
        assert "trace_id" not in outside
    finally:
        root.handlers, _ = saved[0], root.setLevel(saved[1])
        structlog.reset_defaults()


def test_correlate_logs_without_field_sources(clean_env: pytest.MonkeyPatch) -> None:
    """A logging setup without apiary.logging's field sources still gets the ids: structlog's
    formatter a processor, a plain handler a filter (``%(trace_id)s``)."""
    from io import StringIO

    from opentelemetry.sdk.trace import TracerProvider

    logger = logging.getLogger("test.correlate")
    logger.propagate = False
    plain, structured = StringIO(), StringIO()
    handler = logging.StreamHandler(plain)
    handler.setFormatter(logging.Formatter("%(trace_id)s %(message)s"))
    json_handler = logging.StreamHandler(structured)
    json_handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[structlog.processors.JSONRenderer()])
    )
    logger.handlers = [handler, json_handler]
    tracing.install(TracerProvider())
    tracing.correlate_logs(logger)
    tracing.correlate_logs(logger)  # idempotent
    assert tracing.TRACER is not None
    with tracing.TRACER.start_as_current_span("s") as span:
        logger.warning("hello")
    trace_id = f"{span.get_span_context().trace_id:032x}"
    assert plain.getvalue() == f"{trace_id} hello\n"
    assert json.loads(structured.getvalue())["trace_id"] == trace_id


@pytest.mark.parametrize("sampled", [True, False])
def test_an_unsampled_trace_makes_no_spans_but_still_travels(
    clean_env: pytest.MonkeyPatch, sampled: bool
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

    from apiary.telemetry import hops

    exported = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(ALWAYS_ON if sampled else ALWAYS_OFF))
    provider.add_span_processor(SimpleSpanProcessor(exported))
    tracing.install(provider)
    assert tracing.FOLLOWS_PARENT
    with hops.router_step("input", "c/s", "h", None) as step:
        headers = hops.dispatch_headers("subj", "c/s", "h", "s1", "d1", 0, None, {})
    trace_id = f"{step.get_span_context().trace_id:032x}"
    with hops.process(headers, None, "c/s", "h", "s1", "d1", "c/drone", 0, None):
        with hops.invoke_agent("s1", "c/drone", "c/s", "m1", None) as invoke:
            given = tracing.traceparent(invoke)
            chat = hops.llm_begin("chat", None, "c/s", "m1", "http://x/v1", "m", False)
            hops.llm_end(chat, 200, (1, 2))
        back = hops.current_headers()
    assert given is not None and given.split("-")[1] == trace_id
    outputs = [{"traceparent": given}]  # an answer defaults to its message's traceparent
    with hops.outcome_step(back, outputs, "c/s", "h", "s1", "d1", 0) as step_back:
        assert tracing.traceparent(step_back).split("-")[1] == trace_id  # type: ignore[union-attr]
    if sampled:  # the outcome's bus header names the process span; unsampled, the outputs do
        assert back["traceparent"].split("-")[1] == trace_id
    names = sorted(s.name for s in exported.get_finished_spans())
    if sampled:
        assert names == sorted(["route input", "send s1", "wait s1", "process s1",
                                "invoke_agent s1", "chat m", "route outcome"])  # fmt: skip
    else:
        assert names == []
        assert int(given[-2:], 16) & 1 == 0  # the sampled flag is off all the way
        assert headers["traceparent"] == tracing.traceparent(step)
