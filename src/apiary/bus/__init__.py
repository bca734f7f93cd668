"""Message buses, chosen by URL scheme: ``memory://`` (in-process) or ``nats://`` (JetStream).

Only this package's backend modules import their client library, and only when that backend is
opened, so the embedded mode never needs nats-py loaded.
"""

from __future__ import annotations

from apiary.bus.base import (
    DEDUPE_WINDOW,
    Bus,
    Delivery,
    Handler,
    Publish,
    Subscription,
)
from apiary.bus.subjects import check_filter, check_subject, consumer_name, matches
from apiary.errors import BadRequest


def open_bus(url: str = "memory://") -> Bus:
    """A bus for ``url`` (not yet opened): ``memory://``, ``nats://host:4222[?stream=…]``, or
    ``fd://N`` — apiaryd's bus served on socket descriptor N (:mod:`apiary.bus.remote`; how
    ``apiaryd --node-process`` gives its node the embedded bus).

    NATS query options: ``stream`` (default ``APIARY``), ``subjects`` (comma list, default
    ``apiary.>``), ``max_age`` (seconds, default 86400), ``duplicate_window`` (seconds, default
    120), ``storage`` (``file``/``memory``), ``replicas``, ``max_ack_pending``, ``ack_wait``
    (seconds: a cap on every consumer's ack wait, i.e. how soon a crashed process's work is
    redelivered).
    """
    scheme = url.split(":", 1)[0].lower() if isinstance(url, str) else ""
    if scheme == "memory":
        from apiary.bus.memory import MemoryBus

        return MemoryBus(url)
    if scheme in ("nats", "tls"):
        from apiary.bus.jetstream import JetStreamBus

        return JetStreamBus(url)
    if scheme == "fd":
        from apiary.bus.remote import RemoteBus

        return RemoteBus(url)
    raise BadRequest(f"unknown bus URL scheme {scheme!r} in {url!r} (use memory:// or nats://)")


__all__ = [
    "DEDUPE_WINDOW",
    "Bus",
    "Delivery",
    "Handler",
    "Publish",
    "Subscription",
    "check_filter",
    "check_subject",
    "consumer_name",
    "matches",
    "open_bus",
]
