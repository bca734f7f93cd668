"""A real OTLP/HTTP trace receiver on loopback, for tests: what a collector, Jaeger or Tempo sees.

``POST /v1/traces`` with ``application/x-protobuf`` (gzip or not) is decoded with
``opentelemetry-proto``'s ``ExportTraceServiceRequest`` — the wire format the exporters really
send, so a test proves the spans leave the process, not only that the SDK made them. Each span
becomes a plain :class:`Got` with hex ids, its service name and its attributes as Python values.
Runs on a thread (``http.server``): exporters post from their own threads, and an agent process
posts from outside the test's event loop.
"""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass
class Got:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    kind: str
    service: str
    attributes: dict[str, Any]
    status: int  # 0 unset, 1 ok, 2 error
    events: list[str] = field(default_factory=list)
    start_ns: int = 0
    end_ns: int = 0


def value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


def decode(body: bytes) -> list[Got]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    out: list[Got] = []
    for rs in request.resource_spans:
        resource = {kv.key: value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(Got(
                    s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                    KINDS.get(s.kind, str(s.kind)), str(resource.get("service.name", "")),
                    {kv.key: value(kv.value) for kv in s.attributes}, s.status.code,
                    [e.name for e in s.events], s.start_time_unix_nano, s.end_time_unix_nano,
                ))  # fmt: skip
    return out


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[Got] = []
        self.posts = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                got = decode(body)
                with receiver._lock:
                    receiver.spans.extend(got)
                    receiver.posts += 1
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        """What ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes (the exporter appends ``/v1/traces``)."""

    def trace(self, trace_id: str) -> list[Got]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> list[Got]:
        """Spans once ``predicate(spans)`` holds (or what there is after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans) or time.monotonic() > deadline:
                return spans
            time.sleep(0.05)


@contextlib.contextmanager
def running_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver()
    thread = threading.Thread(target=receiver.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        thread.join(5)
