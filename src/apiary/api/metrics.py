"""Prometheus metrics for the API, in a registry per app (tests run many apps in one process).

``/metrics`` renders this registry, then the ones attached with :meth:`ApiMetrics.attach`: the
process's message-path recorder (:mod:`apiary.telemetry.metrics`, with ``process_*`` and
``python_*``) always, and apiaryd's cluster-state collector (:mod:`apiary.telemetry.cluster`).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics import exposition as openmetrics

from apiary.telemetry.metrics import recorder

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """Request count and latency by method, route template (not raw path) and status."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.attached: list[CollectorRegistry] = [recorder().registry]
        """Registries rendered after this one (their names must not collide with ours)."""
        self.requests = Counter(
            "apiary_api_requests",
            "API requests served",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "apiary_api_request_duration_seconds",
            "API request latency",
            ["method", "route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.watches = Gauge(
            "apiary_api_open_watches", "open watch streams", registry=self.registry
        )
        self.reconciles = Counter(
            "apiary_refs_reconciles",
            "reference resolution passes",
            ["kind"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        labels = (method, route, str(status))
        self.requests.labels(*labels).inc()
        self.latency.labels(*labels).observe(seconds)

    def attach(self, registry: CollectorRegistry) -> None:
        """Render ``registry`` after ours on ``/metrics``."""
        if registry not in self.attached:
            self.attached.append(registry)

    def render(self) -> bytes:
        return b"".join(generate_latest(r) for r in (self.registry, *self.attached))

    def render_openmetrics(self) -> bytes:
        """The OpenMetrics text (with exemplars): each registry's, one ``# EOF`` at the end."""
        eof = b"# EOF\n"
        parts: list[bytes] = [
            openmetrics.generate_latest(r)  # type: ignore[no-untyped-call]
            for r in (self.registry, *self.attached)
        ]
        return b"".join(p.removesuffix(eof) for p in parts) + eof

    def negotiate(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type) for a scraper's ``Accept`` header."""
        if accept and "application/openmetrics-text" in accept:
            return self.render_openmetrics(), openmetrics.CONTENT_TYPE_LATEST
        return self.render(), self.content_type
