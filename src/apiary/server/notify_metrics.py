"""Prometheus counters for notices, guardrail violations and webhook deliveries.

They live in the API's registry (``ApiState.metrics.registry``) so the existing ``/metrics``
endpoint shows them; labels are bounded (cells and hives exist in the store, reasons and results
are fixed vocabularies), never session names or ids.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class NotifyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.notices = Counter(
            "apiary_notices",
            "notices raised by the router (webhook events), by event",
            ["event", "cell", "hive"],
            registry=self.registry,
        )
        self.violations = Counter(
            "apiary_guardrail_violations",
            "guardrail violations and timeouts of dispatched messages, by reason",
            ["reason", "cell", "hive"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "apiary_webhook_deliveries",
            "webhook deliveries by result: delivered, rejected (4xx), undeliverable (attempts "
            "exhausted), retried (a failed attempt that is retried), skipped (misconfigured)",
            ["result"],
            registry=self.registry,
        )
        self.dropped = Counter(
            "apiary_notices_dropped",
            "notices dropped because the notifier's queue was full",
            registry=self.registry,
        )
