"""The spans of one session message's hops, with their names and attributes in one place.

Why here and not in each component: the router, the node's worker and keeper, the LLM gateway
and the API each call one helper, only after their ``tracing.TRACER is None`` test, so the
OpenTelemetry API is imported only when tracing is on, and the attribute vocabulary
(docs/observability.md, "Traces") cannot drift between components. The helpers take plain
values: this package knows nothing of the router or the node (import contracts).

The trace of a message (parents across processes travel as W3C ``traceparent``: an HTTP
header into the API and to http agents, a bus header on dispatches and outcomes, the Waggle
message's own field for the agent)::

    POST …/messages                     SERVER    api
      route input                       INTERNAL  router step (commit + publish)
        send {stage}                    PRODUCER  the dispatch on the bus
          wait {stage}                  INTERNAL  queue wait, publish → taken by a drone
          process {stage}               CONSUMER  the drone's worker
            invoke_agent {stage}        INTERNAL  the keeper's delivery; the agent's work
              (the agent's own spans)             its parent is the message's traceparent
              chat {model}              CLIENT    each LLM gateway call
            route outcome               INTERNAL  the router's step for the answer
              send {next stage} …

Attributes follow the OpenTelemetry semantic conventions :data:`~apiary.telemetry.tracing.
SEMCONV_VERSION` (``gen_ai.*``, ``messaging.*``, ``http.*``); Apiary's own are ``apiary.*``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from apiary.telemetry import tracing

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

SENT_HEADER = "apiary-sent-ns"
"""Bus header: when the router published a dispatch (ns since the epoch), for the queue wait."""
TRACEPARENT = "traceparent"

Attrs = dict[str, Any]


def _tracer() -> Tracer:
    tracer = tracing.TRACER
    assert tracer is not None, "a hop helper was called with tracing off"
    return tracer


def _session_attrs(session: str, hive: str) -> Attrs:
    cell, _, name = session.partition("/")
    return {
        "apiary.cell": cell,
        "apiary.hive": hive,
        "apiary.session": name,
        "gen_ai.conversation.id": session,
    }


# --------------------------------------------------------------------------------- API


def api_begin(method: str, path: str, header: str | None) -> tuple[Span, object]:
    """A SERVER span for one API request, made current; its parent is the caller's
    ``traceparent`` header. Returns (span, token for :func:`api_end`)."""
    from opentelemetry import context
    from opentelemetry.trace import SpanKind, set_span_in_context

    span = _tracer().start_span(
        method, tracing.context_from(header), SpanKind.SERVER,
        {"http.request.method": method, "url.path": path},
    )  # fmt: skip
    return span, context.attach(set_span_in_context(span))


def api_end(span: Span, token: object, method: str, status: int, route: str | None) -> None:
    from opentelemetry import context
    from opentelemetry.trace import StatusCode

    context.detach(token)  # type: ignore[arg-type]
    if route:
        span.update_name(f"{method} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(StatusCode.ERROR)
    span.end()


# ------------------------------------------------------------------------------ router


@contextmanager
def router_step(
    event: str, session: str, hive: str, parent: str | None, **attrs: Any
) -> Iterator[Span]:
    """The router's step for an input or an outcome: load, plan, commit, publish.

    An input inside an API request is its child; otherwise (an outcome, a call from Python) the
    parent is ``parent``, the message's or the bus header's ``traceparent``."""
    ctx = None if event == "input" and tracing.in_span() else tracing.context_from(parent)
    skip = tracing.unsampled(ctx)
    if skip is not None:
        yield skip  # not made current: the next hop finds the trace in the message anyway
        return
    extra = {f"apiary.{k}": v for k, v in attrs.items() if v is not None}
    with _tracer().start_as_current_span(
        f"route {event}", ctx, attributes={**_session_attrs(session, hive), **extra}
    ) as span:
        yield span


def outcome_step(
    headers: Mapping[str, str], outputs: Sequence[Any], session: str, hive: str, stage: str,
    dispatch: str, attempt: int, event: str = "outcome",
) -> AbstractContextManager[Span]:  # fmt: skip
    """The router's step for a drone's outcome: a child of the drone's span (the outcome's bus
    header; else the ``traceparent`` its outputs carry)."""
    parent = headers.get(TRACEPARENT) or next(
        (o.get(TRACEPARENT) for o in outputs if isinstance(o, dict) and o.get(TRACEPARENT)), None
    )
    return router_step(event, session, hive, parent, stage=stage, dispatch=dispatch,
                       attempt=attempt)  # fmt: skip


def notices(events: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """A step's notices (retries, timeouts, guardrail violations, dead letters, approvals) as
    events of the current span; a dead letter or a failed session is its error status."""
    from opentelemetry.trace import StatusCode, get_current_span

    span = get_current_span()
    for name, detail in events:
        span.add_event(f"apiary.{name}", _flat(detail))
        if name in ("dead_letter", "session_failed"):
            span.set_status(StatusCode.ERROR, str(detail.get("reason") or name))


def retry_scheduled(stage: str, dispatch: str, attempt: int, delay: float) -> None:
    from opentelemetry.trace import get_current_span

    get_current_span().add_event("apiary.retry", {
        "apiary.stage": stage, "apiary.dispatch": dispatch, "apiary.attempt": attempt,
        "apiary.retry.delay_s": delay,
    })  # fmt: skip


def dispatch_headers(
    subject: str, session: str, hive: str, stage: str, dispatch: str, attempt: int,
    tokens_left: int | None, message: Mapping[str, Any],
) -> dict[str, str]:  # fmt: skip
    """A PRODUCER span for one dispatch published to a stage; the bus headers carry it. Outside
    a router step (a sweep republishing what a crash lost) its parent is the trace the journaled
    message carries."""
    from opentelemetry.trace import SpanKind

    parent = None if tracing.in_span() else tracing.context_from(message.get(TRACEPARENT))
    skip = tracing.unsampled(parent)
    if skip is not None:
        return {TRACEPARENT: tracing.traceparent(skip) or ""}
    attrs: Attrs = {
        **_session_attrs(session, hive), "apiary.stage": stage, "apiary.dispatch": dispatch,
        "apiary.attempt": attempt, "messaging.system": "apiary", "messaging.operation.type": "send",
        "messaging.destination.name": subject, "messaging.message.id": f"{session}/{dispatch}",
    }  # fmt: skip
    if tokens_left is not None:
        attrs["apiary.budget.tokens_remaining"] = tokens_left
    span = _tracer().start_span(f"send {stage}", parent, SpanKind.PRODUCER, attrs)
    span.end()
    return {TRACEPARENT: tracing.traceparent(span) or "", SENT_HEADER: str(time.time_ns())}


# -------------------------------------------------------------------------------- node


@contextmanager
def process(
    headers: Mapping[str, str], message_traceparent: str | None, session: str, hive: str,
    stage: str, dispatch: str, drone: str, attempt: int, tokens_left: int | None,
) -> Iterator[Span]:  # fmt: skip
    """The drone's CONSUMER span for a dispatch (current while the worker has it), and the
    queue wait before it as a span of its own."""
    from opentelemetry.trace import SpanKind

    tracer = _tracer()
    parent = tracing.context_from(headers.get(TRACEPARENT) or message_traceparent)
    skip = tracing.unsampled(parent) if parent is not None else None
    if skip is not None:  # current (plain attach, no span), so the keeper and the outcome see it
        from opentelemetry import context

        token = context.attach(parent)  # type: ignore[arg-type]
        try:
            yield skip
        finally:
            context.detach(token)
        return
    now = time.time_ns()
    attrs: Attrs = {
        **_session_attrs(session, hive), "apiary.stage": stage, "apiary.dispatch": dispatch,
        "apiary.drone": drone, "apiary.attempt": attempt, "messaging.system": "apiary",
        "messaging.operation.type": "process",
    }  # fmt: skip
    if tokens_left is not None:
        attrs["apiary.budget.tokens_remaining"] = tokens_left
    sent = headers.get(SENT_HEADER)
    if sent and sent.isdigit() and int(sent) < now:
        attrs["apiary.queue_wait_ms"] = (now - int(sent)) / 1e6
        where = {"apiary.stage": stage, "apiary.drone": drone}
        wait = tracer.start_span(f"wait {stage}", parent, attributes=where, start_time=int(sent))
        wait.end(now)
    with tracer.start_as_current_span(
        f"process {stage}", parent, SpanKind.CONSUMER, attrs, start_time=now
    ) as span:
        yield span


def current_headers() -> dict[str, str]:
    """Bus headers that carry the current span (an outcome back to the router)."""
    from opentelemetry.trace import get_current_span

    header = tracing.traceparent(get_current_span())
    return {TRACEPARENT: header} if header else {}


def failed(reason: str, message: str) -> None:
    """The current span ends in error: a timeout, a guardrail violation, a budget stop."""
    from opentelemetry.trace import StatusCode, get_current_span

    span = get_current_span()
    span.add_event("apiary.error", {"apiary.error.reason": reason, "apiary.error.message": message})
    span.set_status(StatusCode.ERROR, f"{reason}: {message}")


@contextmanager
def invoke_agent(
    agent: str, drone: str, session: str | None, message_id: str, traceparent: str | None
) -> Iterator[Span]:
    """The keeper's delivery of a message to the agent; the agent's spans are children (its
    message's ``traceparent`` names this span) and so are its LLM gateway calls. A child of the
    worker's span, or (a keeper used alone) of the message's ``traceparent``."""
    parent = None if tracing.in_span() else tracing.context_from(traceparent)
    skip = tracing.unsampled(parent)
    if skip is not None:  # still held: the gateway's calls for it are not sampled either
        tracing.hold(session, message_id, skip)
        try:
            yield skip
        finally:
            tracing.release(session, message_id)
        return
    attrs: Attrs = {
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
        "gen_ai.agent.id": drone, "apiary.drone": drone, "apiary.message": message_id,
    }  # fmt: skip
    if session:
        attrs["gen_ai.conversation.id"] = session
    with _tracer().start_as_current_span(f"invoke_agent {agent}", parent, attributes=attrs) as span:
        tracing.hold(session, message_id, span)
        try:
            yield span
        finally:
            tracing.release(session, message_id)


# ----------------------------------------------------------------------------- gateway


def llm_begin(
    operation: str, header: str | None, session: str | None, message_id: str, base_url: str,
    model: str | None, stream: bool,
) -> Span:  # fmt: skip
    """A CLIENT span for one LLM call through the gateway (``chat``, ``embeddings``): a child
    of the caller's ``traceparent`` header, else of the delivery of the message it pays for."""
    from opentelemetry.trace import SpanKind

    parent: Context | None = tracing.context_from(header) or tracing.held_context(
        session, message_id
    )
    skip = tracing.unsampled(parent) if parent is not None else None
    if skip is not None:
        return skip  # recording nothing: llm_end's calls are no-ops on it
    where = urlsplit(base_url)
    attrs: Attrs = {
        "gen_ai.operation.name": operation, "gen_ai.provider.name": _provider_name(where.hostname),
        "server.address": where.hostname or "", "apiary.message": message_id,
        "gen_ai.request.stream": stream,
    }  # fmt: skip
    if where.port:
        attrs["server.port"] = where.port
    if model:
        attrs["gen_ai.request.model"] = model
    if session:
        attrs["gen_ai.conversation.id"] = session
    name = f"{operation} {model}" if model else operation
    return _tracer().start_span(name, parent, SpanKind.CLIENT, attrs)


def llm_end(
    span: Span, status: int, usage: tuple[int, int] | None, answer: Any = None,
    estimated: bool = False,
) -> None:  # fmt: skip
    """Usage, response model and outcome of an LLM call; ends its span."""
    from opentelemetry.trace import StatusCode

    span.set_attribute("http.response.status_code", status)
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage[0])
        span.set_attribute("gen_ai.usage.output_tokens", usage[1])
        span.set_attribute("apiary.usage.estimated", estimated)
    if isinstance(answer, dict):
        if isinstance(answer.get("model"), str):
            span.set_attribute("gen_ai.response.model", answer["model"])
        if isinstance(answer.get("id"), str):
            span.set_attribute("gen_ai.response.id", answer["id"])
        reasons = [c.get("finish_reason") for c in answer.get("choices") or []
                   if isinstance(c, dict) and isinstance(c.get("finish_reason"), str)]  # fmt: skip
        if reasons:
            span.set_attribute("gen_ai.response.finish_reasons", reasons)
    if status >= 400:
        span.set_attribute("error.type", str(status))
        span.set_status(StatusCode.ERROR)
    span.end()


def llm_refused(span: Span | None, status: int, kind: str, message: str) -> None:
    """A call the gateway refused (budget, not in flight ...): an error of its span."""
    from opentelemetry.trace import StatusCode

    if span is None:
        return
    span.set_attribute("error.type", kind)
    span.set_attribute("http.response.status_code", status)
    span.set_status(StatusCode.ERROR, message)
    span.end()


def _provider_name(host: str | None) -> str:
    """``gen_ai.provider.name``: the well-known value for the host, else ``openai`` — the
    protocol the gateway speaks to every provider."""
    host = (host or "").lower()
    for needle, name in (("anthropic", "anthropic"), ("azure", "azure.ai.openai"),
                         ("googleapis", "gcp.gemini"), ("mistral", "mistral_ai"),
                         ("groq", "groq"), ("deepseek", "deepseek"), ("x.ai", "x_ai")):  # fmt: skip
        if needle in host:
            return name
    return "openai"


def _flat(detail: Mapping[str, Any]) -> Attrs:
    out: Attrs = {}
    for key, value in detail.items():
        plain = isinstance(value, str | bool | int | float)
        if plain or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            out[f"apiary.{key}"] = value
        elif value is not None:
            out[f"apiary.{key}"] = str(value)
    return out


__all__ = [
    "SENT_HEADER",
    "api_begin",
    "api_end",
    "current_headers",
    "dispatch_headers",
    "failed",
    "invoke_agent",
    "llm_begin",
    "llm_end",
    "llm_refused",
    "notices",
    "outcome_step",
    "process",
    "retry_scheduled",
    "router_step",
]
