"""Knobs of the Queen (the controllers), as nested dataclasses so apiaryd can fill them from flags.

Time-dependent logic (node leases, event ageing) reads ``QueenSettings.clock`` instead of the
wall clock, so tests can move time forward without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class LoopSettings:
    """How the reconcile loops are driven."""

    resync_period: float = 30.0
    """Seconds between full resyncs of every object, in case a watch event was missed."""

    workers: int = 4
    """Concurrent reconciles per controller (one key is never reconciled twice at once)."""

    retry_base_delay: float = 0.05
    """First requeue delay after a failed reconcile; doubles per consecutive failure."""

    retry_max_delay: float = 10.0
    """Cap of the requeue delay after repeated failures."""

    watch_restart_delay: float = 0.5
    """Pause before re-opening a watch that ended with an error (other than 410 Gone)."""


@dataclass
class RolloutSettings:
    """How a Hive or AgentSpec replaces its drones when the template changes."""

    max_surge_percent: int = 25
    """Extra drones (percent of wanted, at least one) that may exist during a rolling update."""

    max_creates_per_pass: int = 100
    """Most drones one pass of a group creates. Within a pass they go in slow-start batches of
    1, 2, 4, … (Kubernetes' ReplicaSet), the pass stopping at the first failed create; the
    creations' own watch events bring the owner back for the rest. A scale-up to 1,000 drones is
    then ten short passes, not one write burst that holds the API for seconds."""

    max_deletes_per_pass: int = 100
    """Most drones one pass of a group deletes (scale down, retired old-template drones); the
    rest go on the next pass, which the deletions' watch events trigger."""


@dataclass
class NodeSettings:
    """Node lifecycle: leases and eviction."""

    lease_duration: float = 10.0
    """Seconds after the last heartbeat at which a Node is considered lost (Ready=False) and its
    drones are evicted. With ``monitor_period`` 1 s the failover completes within ~12 s."""

    monitor_period: float = 1.0
    """Seconds between lease checks of every Node (leases expire without any watch event)."""


@dataclass
class SchedulerSettings:
    """Placement of drones on nodes."""

    period: float = 5.0
    """Seconds between scheduling passes even without a triggering change (capacity may free up
    through a lease renewal that changes nothing the scheduler watches)."""


@dataclass
class EventSettings:
    """The Event objects controllers record."""

    ttl: float = 3600.0
    """Seconds after its last occurrence at which an Event is garbage-collected."""

    component: str = "queen"
    """``source.component`` written on every Event."""


@dataclass
class GCSettings:
    """Garbage collection of orphans."""

    period: float = 30.0
    """Seconds between sweeps for drones whose owner is gone and for expired Events."""


@dataclass
class CellUsageSettings:
    """Writing each Cell's ``status.used``."""

    period: float = 10.0
    """Seconds between passes when nothing changes (a change wakes the pass earlier)."""
    min_interval: float = 1.0
    """Seconds at least between two passes, so a burst of drone changes costs one pass."""
    llm_min_interval: float = 3.0
    """Seconds at least between two copies of the LLM budget ledgers onto each Cell's and Hive's
    ``status.usage`` (:mod:`apiary.controllers.llmusage`): a burst of calls costs one write."""


@dataclass
class PoolSettings:
    """Warm pools (Hive ``poolMode`` warm/hybrid): :mod:`apiary.controllers.warmpool`."""

    period: float = 1.0
    """Seconds between two looks at the traffic of ``hybrid`` stages (the router's backlog and
    the drones' ``status.usage``): how late a pool is released after ``pool.idleSeconds``, or
    brought back after new traffic, at most."""


@dataclass
class QueenSettings:
    """Everything :func:`apiary.controllers.run_controllers` needs besides the store."""

    loop: LoopSettings = field(default_factory=LoopSettings)
    """Watch/resync/worker behaviour shared by all reconcilers."""

    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    """Rolling-update policy for drone sets."""

    nodes: NodeSettings = field(default_factory=NodeSettings)
    """Node lease and eviction policy."""

    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    """Scheduler pacing."""

    events: EventSettings = field(default_factory=EventSettings)
    """Event recording."""

    gc: GCSettings = field(default_factory=GCSettings)
    """Orphan collection."""

    usage: CellUsageSettings = field(default_factory=CellUsageSettings)
    """Cell ``status.used``."""

    pools: PoolSettings = field(default_factory=PoolSettings)
    """Warm pools: how often hybrid stages' traffic is looked at."""

    tiers: dict[str, Any] = field(default_factory=dict)
    """The server's task tier map (apiaryd's ``Settings.tiers``, env ``APIARY_TIERS``): what a
    ``taskTier`` resolves to where the Cell's ``spec.tiers`` says nothing."""

    clock: Clock = _utcnow
    """Current time (timezone-aware). Inject a fake to test lease expiry without sleeping."""
