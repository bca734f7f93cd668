"""What every handler needs, built once per app: the store, config, guards and helpers."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from apiary.api.auth import Authenticator, Authorizer
from apiary.api.events import EventRecorder
from apiary.api.fairness import OverloadLimits
from apiary.api.metrics import ApiMetrics
from apiary.api.nodeauth import NodeServes
from apiary.api.quotas import QuotaGuard
from apiary.comb import Comb
from apiary.comb.memory import MemoryComb
from apiary.journal import Journal
from apiary.resources.limits import AdmissionLimits
from apiary.router import Router
from apiary.store import Store


@dataclass
class ApiConfig:
    """Knobs of the HTTP API."""

    max_body_bytes: int = 1 << 20
    """Largest request body accepted; more is refused with 413."""

    bookmark_interval: float = 15.0
    """Seconds between BOOKMARK lines on an idle watch stream."""

    ready_timeout: float = 2.0
    """How long ``/readyz`` waits for the store before answering 503."""

    max_message_bytes: int = 256 << 10
    """Largest session message payload (JSON-encoded) accepted; more is refused with 413."""

    admission: AdmissionLimits = field(default_factory=AdmissionLimits)
    """What one object may ask for (size, stages, replicas, nesting, annotations); a Cell's
    ``resourceQuota`` may lower it (docs/api.md, "Limits")."""

    overload: OverloadLimits = field(default_factory=OverloadLimits)
    """How many requests may be in flight at once, per principal and lane (node heartbeats and
    status writes in a lane of their own, watches and streams in another); over → 429 with
    ``Retry-After`` (docs/api.md, "Overload")."""


@dataclass
class ApiState:
    store: Store
    config: ApiConfig
    authenticator: Authenticator
    authorizer: Authorizer = field(default_factory=Authorizer)
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set at shutdown: open watch streams end so the server can stop promptly."""
    router: Router | None = None
    """Runs sessions (set by apiaryd once the journal and bus are open)."""
    journal: Journal | None = None
    """Session transcripts and pattern state."""
    comb: Comb = field(default_factory=MemoryComb)
    """Session and long-term memory (apiaryd passes the configured one; memory:// otherwise)."""
    node_serves: NodeServes = field(default_factory=NodeServes)
    """Whether a node runs a drone of a hive (its gateway's budget and replay calls)."""
    quotas: QuotaGuard = field(init=False)
    recorder: EventRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.quotas = QuotaGuard(self.store)
        self.recorder = EventRecorder(self.store, component="apiary-apiserver")
