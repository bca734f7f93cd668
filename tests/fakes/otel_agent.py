"""A Python agent that brings its own OpenTelemetry SDK: it joins the trace of each message.

Reads one Waggle message per stdin line, continues the trace its ``traceparent`` names (the
keeper's ``invoke_agent`` span) with a span of its own, exports it over OTLP/HTTP to
``$OTEL_EXPORTER_OTLP_ENDPOINT`` before answering (a SimpleSpanProcessor: the span is sent when it
ends), and answers ``{"seen": <payload>, "traceId": ...}``. Nothing in it is Apiary's: any agent
with an OTel SDK does the same.
"""

import json
import sys

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


def main() -> None:
    provider = TracerProvider(resource=Resource.create({}))  # OTEL_SERVICE_NAME names it
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
    tracer = provider.get_tracer("otel_agent")
    propagator = TraceContextTextMapPropagator()
    for line in sys.stdin:
        msg = json.loads(line)
        parent = propagator.extract({"traceparent": msg.get("traceparent") or ""})
        with tracer.start_as_current_span("otel_agent.answer", parent) as span:
            span.set_attribute("gen_ai.operation.name", "execute_tool")
            span.set_attribute("gen_ai.tool.name", "summarise")
            trace_id = f"{span.get_span_context().trace_id:032x}"
        out = {"type": "result", "payload": {"seen": msg.get("payload"), "traceId": trace_id}}
        print(json.dumps(out), flush=True)
    provider.shutdown()


if __name__ == "__main__":
    main()
