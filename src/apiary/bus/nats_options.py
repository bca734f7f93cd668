"""Options of the NATS JetStream bus, read from the bus URL's query string.

``nats://host:4222?stream=APIARY&subjects=apiary.>&max_age=86400`` — every option has a default
and a bad one is rejected naming the parameter, so a typo in ``--bus`` fails at start-up rather
than as a mysterious stream mismatch later.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit, urlunsplit

from apiary.bus.base import DEDUPE_WINDOW
from apiary.bus.subjects import check_filter
from apiary.errors import FieldDetail, Invalid


class NatsOptions:
    """Bus options from the URL query, validated with the offending parameter named."""

    def __init__(self, url: str, overrides: Mapping[str, object]) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise Invalid(f"bus URL {url!r} has no host", [FieldDetail("bus", "missing host")])
        self.server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        query.update({k: str(v) for k, v in overrides.items() if v is not None})
        known = {
            "stream",
            "subjects",
            "max_age",
            "duplicate_window",
            "storage",
            "replicas",
            "max_ack_pending",
            "pull_expires",
            "publish_timeout",
            "ack_wait",
        }
        for key in query:
            if key not in known:
                why = f"unknown option (known: {', '.join(sorted(known))})"
                raise Invalid(f"bus URL option {key!r}: {why}", [FieldDetail(f"bus.{key}", why)])
        self.stream = query.get("stream", "APIARY")
        if not self.stream or any(c in self.stream for c in ". *>\t"):
            why = "stream names may not be empty or contain '.', '*', '>' or whitespace"
            raise Invalid(f"bus stream {self.stream!r}: {why}", [FieldDetail("bus.stream", why)])
        self.subjects = [s.strip() for s in query.get("subjects", "apiary.>").split(",")]
        for s in self.subjects:
            check_filter(s)
        self.max_age = self._number(query, "max_age", 86_400.0)
        self.duplicate_window = self._number(query, "duplicate_window", DEDUPE_WINDOW)
        self.storage = query.get("storage", "file")
        if self.storage not in ("file", "memory"):
            why = "must be 'file' or 'memory'"
            raise Invalid(f"bus storage {self.storage!r}: {why}", [FieldDetail("bus.storage", why)])
        self.replicas = int(self._number(query, "replicas", 1))
        self.max_ack_pending = int(self._number(query, "max_ack_pending", 20_000))
        self.pull_expires = self._number(query, "pull_expires", 5.0)
        self.publish_timeout = self._number(query, "publish_timeout", 10.0)
        self.ack_wait = self._number(query, "ack_wait", 1.0) if "ack_wait" in query else None
        """Cap on every consumer's ack wait (seconds): how soon work a crashed process held is
        redelivered (JetStream's own timer; 30 s by default)."""

    @staticmethod
    def _number(query: Mapping[str, str], key: str, default: float) -> float:
        raw = query.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0:
            why = "must be a positive number"
            raise Invalid(f"bus option {key}={raw!r}: {why}", [FieldDetail(f"bus.{key}", why)])
        return value


__all__ = ["NatsOptions"]
