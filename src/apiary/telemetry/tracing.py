"""OpenTelemetry traces for apiaryd and the node agent, off unless ``OTEL_*`` asks for them.

Why a module global: the message path runs through the router, the worker, the keeper and the
gateway thousands of times a second, and with tracing off each of them pays one
``tracing.TRACER is None`` test and nothing else — the OpenTelemetry SDK is not even imported
(it is the optional extra ``apiary[telemetry]``). :func:`init_tracing` sets :data:`TRACER` once
per process from the standard environment variables:

* on when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``…_TRACES_ENDPOINT``) is set, or
  ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``); ``none`` or
  ``OTEL_SDK_DISABLED=true`` keep it off;
* ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``…_TRACES_PROTOCOL``): ``http/protobuf`` (default) or ``grpc``;
* ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES`` (default service name: the component's;
  default ``service.instance.id``: ``host:pid``, which tells replicas apart),
  ``OTEL_TRACES_SAMPLER`` / ``…_ARG``, ``OTEL_BSP_*`` — read by the SDK itself.

The span helpers of each hop live in :mod:`apiary.telemetry.hops`; this module holds what they
share: the W3C ``traceparent`` in and out, the spans of messages an agent holds (so the LLM
gateway finds the parent of a call that names none), and the trace ids in log lines.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, SpanContext, Tracer

log = logging.getLogger("apiary.telemetry")

SEMCONV_VERSION = "1.37.0"
"""The OpenTelemetry semantic conventions (GenAI spans included) the attributes follow."""
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

TRACER: Tracer | None = None
"""None: tracing is off, and every hook skips its work after this one test."""
_PROVIDER: TracerProvider | None = None
FOLLOWS_PARENT = False
"""True when the sampler drops every child of an unsampled parent (the ``parentbased_*``
samplers, the SDK's default): the hops then make no span that would record nothing — with
sampling, most messages cost a context look-up per hop, not a span."""

HOLDING_MAX = 10_000
_holding: dict[tuple[str, str], SpanContext] = {}
"""(session, message id) → the span of the keeper's delivery, while the agent holds it."""


def wanted(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces (see the module docstring)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def init_tracing(
    service_name: str, env: Mapping[str, str] = os.environ, *, node: str | None = None
) -> bool:
    """Turn tracing on for this process when the environment asks for it; True when on.

    ``node``: the node agent's name, the resource attribute ``apiary.node`` of its spans.
    Idempotent. Without the ``telemetry`` extra installed a request for traces is a warning and
    tracing stays off: observability never stops Apiary from starting."""
    if TRACER is not None:
        return True
    if not wanted(env):
        return False
    try:
        provider = _provider(service_name, env, node)
    except ImportError as exc:
        log.warning(
            "OTEL_* asks for traces but the OpenTelemetry SDK is not installed "
            "(pip install 'apiary[telemetry]'): tracing stays off",
            extra={"error": str(exc)},
        )
        return False
    install(provider)
    return True


def install(provider: TracerProvider) -> None:
    """Use ``provider`` for Apiary's spans (tests hand one with their own exporter)."""
    global TRACER, _PROVIDER, FOLLOWS_PARENT
    import apiary

    _PROVIDER = provider
    FOLLOWS_PARENT = _follows_parent(provider)
    TRACER = provider.get_tracer("apiary", apiary.__version__, schema_url=SCHEMA_URL)
    import apiary.logging

    add_source = getattr(apiary.logging, "add_field_source", None)
    if add_source is not None:  # every line, whenever logging is (re)configured
        add_source(current_trace_fields)
    else:
        correlate_logs()


def _follows_parent(provider: TracerProvider) -> bool:
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    sampler = getattr(provider, "sampler", None)
    return (
        isinstance(sampler, ParentBased)
        and getattr(sampler, "_remote_parent_not_sampled", None) is ALWAYS_OFF
        and getattr(sampler, "_local_parent_not_sampled", None) is ALWAYS_OFF
    )


def shutdown_tracing() -> None:
    """Flush what is buffered and turn tracing off (at process exit, and between tests)."""
    global TRACER, _PROVIDER
    provider, _PROVIDER, TRACER = _PROVIDER, None, None
    _holding.clear()
    if provider is not None:
        provider.shutdown()


def force_flush(timeout_millis: int = 5000) -> bool:
    return _PROVIDER.force_flush(timeout_millis) if _PROVIDER is not None else True


def _provider(service_name: str, env: Mapping[str, str], node: str | None) -> TracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    import apiary

    attributes: dict[str, Any] = {"service.version": apiary.__version__}
    if node:
        attributes["apiary.node"] = node
    named = env.get("OTEL_SERVICE_NAME") or "service.name=" in env.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:  # given attributes win over the environment's: only when it names none
        attributes["service.name"] = service_name
    if "service.instance.id=" not in env.get("OTEL_RESOURCE_ATTRIBUTES", ""):
        attributes["service.instance.id"] = instance_id()
    provider = TracerProvider(resource=Resource.create(attributes))
    for exporter in _exporters(env):
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def instance_id() -> str:
    """``service.instance.id`` of this process: ``host:pid``. Every apiaryd replica and node has
    the same ``service.name``, so this is what tells a trace's replicas apart (which replica took
    which outcome); ``OTEL_RESOURCE_ATTRIBUTES=service.instance.id=…`` replaces it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    names = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    out: list[SpanExporter] = []
    for name in names:
        if name == "otlp":
            out.append(_otlp(env))
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            out.append(ConsoleSpanExporter())
        elif name and name != "none":
            log.warning(
                "OTEL_TRACES_EXPORTER is not supported (otlp, console, none)",
                extra={"exporter": name},
            )
    return out


def _otlp(env: Mapping[str, str]) -> SpanExporter:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if protocol != "http/protobuf":
        log.warning(
            "OTLP protocol not supported: using http/protobuf", extra={"protocol": protocol}
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()


# ------------------------------------------------------------------------- trace context


def traceparent(span: Span) -> str | None:
    """The W3C ``traceparent`` naming ``span`` as the parent (None for a non-recording one)."""
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def context_from(header: str | None) -> Context | None:
    """A parent context from a ``traceparent`` (None when absent or malformed)."""
    if not header:
        return None
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    parts = header.strip().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        trace_id, span_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3][:2], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    ctx = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))
    return set_span_in_context(NonRecordingSpan(ctx))


def unsampled(ctx: Context | None) -> Span | None:
    """The parent (of ``ctx``, else the current span) when a child of it would not be sampled;
    the hop then passes it on instead of making a span."""
    if not FOLLOWS_PARENT:
        return None
    from opentelemetry.trace import get_current_span

    span = get_current_span(ctx)
    sc = span.get_span_context()
    return span if sc.is_valid and not sc.trace_flags.sampled else None


def in_span() -> bool:
    """Whether a valid span is current (an API request, a router step ...)."""
    from opentelemetry.trace import get_current_span

    return bool(get_current_span().get_span_context().is_valid)


def hold(session: str | None, message_id: str, span: Span) -> None:
    """The agent holds this message now, inside ``span``: its LLM calls are children of it."""
    if len(_holding) >= HOLDING_MAX:
        _holding.pop(next(iter(_holding)))
    _holding[(session or "", message_id)] = span.get_span_context()


def release(session: str | None, message_id: str) -> None:
    _holding.pop((session or "", message_id), None)


def held_context(session: str | None, message_id: str) -> Context | None:
    """The parent for an LLM call made for a held message (None if not held)."""
    ctx = _holding.get((session or "", message_id))
    if ctx is None:
        return None
    from opentelemetry.trace import NonRecordingSpan, set_span_in_context

    return set_span_in_context(NonRecordingSpan(ctx))


# ---------------------------------------------------------------------------- log lines


def current_trace_fields() -> dict[str, str] | None:
    """``trace_id`` and ``span_id`` of the current span, as trace backends show them (lowercase
    hex), so a log line finds its trace; None outside a span or with tracing off (free then).
    A field source of :func:`apiary.logging.add_field_source`."""
    if TRACER is None:
        return None
    from opentelemetry.trace import get_current_span

    ctx = get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def add_trace_ids(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Any:
    """The same as a structlog processor, for a logging setup without field sources."""
    for key, value in (current_trace_fields() or {}).items():
        event.setdefault(key, value)
    return event


class TraceIdFilter(logging.Filter):
    """The same for plain ``logging`` handlers: ``record.trace_id`` / ``record.span_id`` (empty
    outside a span), for a format string such as ``%(trace_id)s``."""

    def filter(self, record: logging.LogRecord) -> bool:
        event: dict[str, Any] = {}
        add_trace_ids(None, "", event)
        record.trace_id = event.get("trace_id", "")
        record.span_id = event.get("span_id", "")
        if isinstance(record.msg, dict):  # a structlog event on its way to its formatter
            record.msg.update(event)
        return True


def correlate_logs(root: logging.Logger | None = None) -> None:
    """Put :func:`add_trace_ids` into the log handlers of ``root`` (default: the root logger).

    structlog's ``ProcessorFormatter`` (apiary.logging) gets the processor before its
    renderer, so JSON lines carry ``trace_id``/``span_id`` as keys; any other handler gets a
    :class:`TraceIdFilter`. Idempotent; call it after logging is configured."""
    for handler in (root or logging.getLogger()).handlers:
        processors = getattr(handler.formatter, "processors", None)
        if isinstance(processors, list):
            if add_trace_ids not in processors:
                processors.insert(0, add_trace_ids)
        elif not any(isinstance(f, TraceIdFilter) for f in handler.filters):
            handler.addFilter(TraceIdFilter())


__all__ = [
    "SCHEMA_URL",
    "SEMCONV_VERSION",
    "TRACER",
    "TraceIdFilter",
    "add_trace_ids",
    "context_from",
    "correlate_logs",
    "current_trace_fields",
    "force_flush",
    "held_context",
    "hold",
    "in_span",
    "init_tracing",
    "install",
    "instance_id",
    "release",
    "shutdown_tracing",
    "traceparent",
    "unsampled",
]
