"""The autoscaler: a Hive stage whose AgentSpec has ``scaling`` follows its load.

Like Kubernetes' HPA writing a Deployment's ``/scale``, it changes one number — the stage's
``replicas`` in the Hive spec, the field ``apiaryctl scale`` writes — and leaves the drones to the
Hive reconciler, which sees the generation change at once. It is level-triggered: every
``period`` (0.5 s) it reads the AgentSpecs, Hives and Drones and the router's per-stage backlog,
decides each stage afresh and writes only when a stage's count must change. It reads them from a
watch-fed cache (:class:`apiary.controllers.cache.Informer`, listed once when ``run`` starts and
again after a 410 Gone), not from the store: a pass lists nothing. Its write is conditioned on
the Hive's resourceVersion, so a cache a moment behind costs a Conflict and the next pass.
What it remembers between passes (when it last scaled each stage, and why) lives in the Hive's
``status.apiary.io/autoscaler`` annotation, so a new leader carries on where the old one stopped.

Rules (docs/autoscaling.md): load = max(router backlog, drones' ``inFlight``); utilization =
load / (ready x ``interface.concurrency``). Above ``scaleUpThreshold``, or a fresh p50 latency
above ``targetLatencyMs``, scales up at once (proportionally); below ``scaleDownThreshold``
scales down by one, no sooner than ``cooldownSeconds`` after the last scale change; a backlog
with no drones scales from zero immediately; ``minReplicas``/``maxReplicas`` bound everything.

A manual scale (``PUT …/scale``, :func:`manual_scale`) is what ``kubectl scale`` is under an HPA:
it sets the count the autoscaler carries on from, clamped to the bounds, and counts as a scale
change for the cooldown — so the stage stays there until load asks for more or the cooldown ends.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from apiary.controllers.cache import Informer
from apiary.controllers.events import EventRecorder
from apiary.controllers.meta import (
    LABEL_HIVE,
    LABEL_STAGE,
    Obj,
    is_owned_by,
    parse_time,
    rfc3339,
    terminating,
)
from apiary.controllers.settings import QueenSettings
from apiary.controllers.templates import (
    AUTOSCALER_ANNOTATION,
    Stage,
    autoscaler_notes,
    hive_stages,
    set_autoscaler_notes,
)
from apiary.errors import Conflict
from apiary.store import Store

log = logging.getLogger("apiary.controllers.autoscaler")

ANNOTATION = AUTOSCALER_ANNOTATION
"""Hive annotation: ``{stage: {replicas, specReplicas, previous, direction, reason, time,
lastScaleUp, lastScaleDown, lastScaleManual}}`` as JSON — the autoscaler's memory and the answer
to "who changed my replicas, and why"."""

StageKey = tuple[str, str, str]
"""(cell, hive, stage)."""

Backlog = Callable[[], Mapping[StageKey, int]]
"""Published, unanswered dispatches per stage (``StageBacklog.snapshot`` of the router)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class AutoscalerSettings:
    period: float = 0.5
    """Seconds between passes: the scale-up reaction time is about one period plus a drone
    start."""

    clock: Callable[[], datetime] = _utcnow
    """Injected in tests to move time (cooldowns) without sleeping."""


# ------------------------------------------------------------------------------ the decision


@dataclass(frozen=True)
class ScalingPolicy:
    """An AgentSpec's ``spec.scaling`` with its defaults filled in."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_latency_ms: float | None = None
    scale_up_threshold: float = 0.8
    scale_down_threshold: float = 0.2
    cooldown_seconds: float = 60.0

    @classmethod
    def of(cls, agentspec: Obj) -> ScalingPolicy | None:
        """None when the AgentSpec has no ``scaling`` (its stages keep their fixed replicas).
        Admission validated the fields; anything unreadable here falls back to the default."""
        raw = (agentspec.get("spec") or {}).get("scaling")
        if not isinstance(raw, dict):
            return None

        def num(key: str, default: float) -> float:
            value = raw.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
            return default

        low = int(num("minReplicas", 1))
        target = num("targetLatencyMs", 0.0)
        return cls(
            min_replicas=low,
            max_replicas=max(low, int(num("maxReplicas", max(low, 1)))),
            target_latency_ms=target or None,
            scale_up_threshold=num("scaleUpThreshold", 0.8) or 0.8,
            scale_down_threshold=num("scaleDownThreshold", 0.2),
            cooldown_seconds=num("cooldownSeconds", 60.0),
        )

    def clamp(self, replicas: int) -> int:
        return min(max(replicas, self.min_replicas), self.max_replicas)


@dataclass(frozen=True)
class StageLoad:
    """What a stage has and does right now."""

    replicas: int
    """Wanted now (the stage's ``replicas``)."""
    ready: int
    backlog: int
    """The router's published, unanswered dispatches (queued + being worked on)."""
    in_flight: int = 0
    """Sum of the drones' ``status.usage.inFlight`` (reported every few seconds)."""
    concurrency: int = 1
    latency_p50_ms: float | None = None
    latency_fresh: bool = False
    """Whether the latency was reported after the stage's last scale change."""

    @property
    def work(self) -> int:
        # The backlog already includes what drones hold; inFlight covers dispatches another
        # router replica published, which this one never counted.
        return max(self.backlog, self.in_flight)


@dataclass(frozen=True)
class History:
    last_up: float | None = None
    last_down: float | None = None
    """Epoch seconds of the stage's last scale-up / scale-down by the autoscaler."""
    last_manual: float | None = None
    """Epoch seconds of the stage's last manual scale (``apiaryctl scale``)."""
    since: float | None = None
    """When the stage came to be (its Hive's creation): a new stage is not scaled down within
    ``cooldownSeconds`` of it either — a stabilization window, as Kubernetes' HPA keeps one."""

    @property
    def last_change(self) -> float:
        """The latest scale change of any kind (or the creation); ``-inf`` when none is known."""
        moments = (self.last_up, self.last_down, self.last_manual, self.since)
        return max((m for m in moments if m is not None), default=-math.inf)


@dataclass(frozen=True)
class Decision:
    replicas: int
    direction: Literal["up", "down"]
    reason: str


def _ratio(work: int, capacity: int) -> float:
    if capacity > 0:
        return work / capacity
    return math.inf if work else 0.0


def decide(policy: ScalingPolicy, load: StageLoad, history: History, now: float) -> Decision | None:
    """The stage's new replica count, or None to leave it. Pure, so the rules are testable
    without a store."""
    cur, c = load.replicas, max(1, load.concurrency)
    low, high, up = policy.min_replicas, policy.max_replicas, policy.scale_up_threshold
    if cur < low:
        return Decision(low, "up", f"below minReplicas {low}")
    if cur > high:
        return Decision(high, "down", f"above maxReplicas {high}")
    work = load.work
    util = _ratio(work, load.ready * c)
    load_text = f"load {work}, {load.ready} ready x concurrency {c}"
    want, reason = 0, ""
    if work and cur == 0:
        want = max(1, math.ceil(work / (c * up)))
        reason = f"scale from zero: {work} messages waiting and no drones"
    elif util > up:
        want = math.ceil(work / (c * up))
        reason = f"utilization {util:.2f} above scaleUpThreshold {up:g} ({load_text})"
    if want <= cur and policy.target_latency_ms is not None and work and load.latency_fresh:
        p50 = load.latency_p50_ms
        if p50 is not None and p50 > policy.target_latency_ms:
            want = cur + 1
            reason = f"latency p50 {p50:g} ms above targetLatencyMs {policy.target_latency_ms:g}"
    want = min(want, high)
    if want > cur:
        return Decision(want, "up", reason)
    if cur <= low or util >= policy.scale_down_threshold:
        return None
    if now - history.last_change < policy.cooldown_seconds:
        return None  # cooling down after the last change (or the stage's creation)
    if _ratio(work, (cur - 1) * c) > up:
        return None  # one drone fewer would be over the threshold at once: no flapping
    return Decision(
        cur - 1,
        "down",
        f"utilization {util:.2f} below scaleDownThreshold {policy.scale_down_threshold:g} "
        f"({load_text})",
    )


# ------------------------------------------------------------------------------ the loop


def read_history(hive: Obj) -> dict[str, Obj]:
    return autoscaler_notes(hive)


def _history(entry: Any, since: Any = None) -> History:
    created = parse_time(since)
    start = created.timestamp() if created is not None else None
    if not isinstance(entry, dict):
        return History(since=start)

    def at(key: str) -> float | None:
        moment = parse_time(entry.get(key))
        return moment.timestamp() if moment is not None else None

    return History(at("lastScaleUp"), at("lastScaleDown"), at("lastScaleManual"), start)


@dataclass
class _Drones:
    ready: int = 0
    in_flight: int = 0
    latencies: list[float] = field(default_factory=list)
    reported: float | None = None
    """Newest ``usage.updatedTime`` (epoch seconds) among the drones."""


def _tally(drones: list[Obj], hives: dict[tuple[str, str], Obj]) -> dict[StageKey, _Drones]:
    out: dict[StageKey, _Drones] = {}
    for d in drones:
        meta = d["metadata"]
        labels = meta.get("labels") or {}
        hive = hives.get((meta.get("namespace", ""), str(labels.get(LABEL_HIVE))))
        if hive is None or terminating(d) or not is_owned_by(d, hive):
            continue
        if not labels.get(LABEL_STAGE):
            continue  # a warm pool drone: no capacity until claimed
        key = (meta["namespace"], labels[LABEL_HIVE], str(labels.get(LABEL_STAGE)))
        tally = out.setdefault(key, _Drones())
        status = d.get("status") or {}
        if status.get("ready") is not True:
            continue
        tally.ready += 1
        usage = status.get("usage") or {}
        flight = usage.get("inFlight")
        if isinstance(flight, int) and not isinstance(flight, bool):
            tally.in_flight += flight
        p50 = usage.get("latencyP50Ms")
        if isinstance(p50, int | float) and not isinstance(p50, bool):
            tally.latencies.append(float(p50))
        stamp = parse_time(usage.get("updatedTime"))
        if stamp is not None:
            tally.reported = max(tally.reported or 0.0, stamp.timestamp())
    return out


def _concurrency(agentspec: Obj) -> int:
    value = ((agentspec.get("spec") or {}).get("interface") or {}).get("concurrency", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


class Autoscaler:
    """Runs :func:`decide` for every autoscaled Hive stage and writes what it decides."""

    KINDS = frozenset({"AgentSpec", "Hive", "Drone"})
    """What a pass reads (from :attr:`cache`)."""

    def __init__(
        self,
        store: Store,
        backlog: Backlog | None = None,
        settings: AutoscalerSettings | None = None,
        *,
        cache: Informer | None = None,
    ) -> None:
        self.store = store
        self.backlog = backlog
        self.settings = settings or AutoscalerSettings()
        self.events = EventRecorder(store, QueenSettings(clock=self.settings.clock))
        self.cache = cache if cache is not None else Informer(store, self.KINDS)
        """The AgentSpecs, Hives and Drones a pass reads; may be shared (apiaryd gives the
        autoscaler and the session reaper one)."""
        if not self.KINDS.issubset(self.cache.kinds):
            raise ValueError(f"the autoscaler's cache must hold {sorted(self.KINDS)}")

    async def run(self, stop: asyncio.Event) -> None:
        """Pass after pass until ``stop``, over the cache (run meanwhile); a failed pass is
        logged and the next one tries again."""
        await self.cache.run_passes(self.run_once, self.settings.period, stop, "autoscaler")

    def _autoscaled_agentspecs(self) -> dict[tuple[str, str], Obj]:
        return {
            (a["metadata"]["namespace"], a["metadata"]["name"]): a
            for a in self.cache.list("AgentSpec")
            if ScalingPolicy.of(a) is not None
        }

    async def run_once(self) -> dict[StageKey, Decision]:
        """One pass over every Hive; returns the changes it made. Outside ``run`` (no cache
        running) the pass lists what it reads once, as a one-off."""
        await self.cache.prepare()
        scaled = self._autoscaled_agentspecs()
        if not scaled:
            return {}
        hives = {
            (h["metadata"]["namespace"], h["metadata"]["name"]): h
            for h in self.cache.list("Hive")
            if not terminating(h)
            and any((h["metadata"]["namespace"], s.agent_ref) in scaled for s in hive_stages(h)[0])
        }
        if not hives:
            return {}  # nothing uses an autoscaled AgentSpec: no need to read the drones
        backlog = dict(self.backlog()) if self.backlog is not None else {}
        drones = _tally(self.cache.list("Drone"), hives)
        now = self.settings.clock().timestamp()
        made: dict[StageKey, Decision] = {}
        for (cell, name), hive in hives.items():
            history = read_history(hive)
            wanted: dict[str, tuple[Stage, Decision]] = {}
            for stage in hive_stages(hive)[0]:
                agentspec = scaled.get((cell, stage.agent_ref))
                policy = ScalingPolicy.of(agentspec) if agentspec is not None else None
                if agentspec is None or policy is None:
                    continue
                key = (cell, name, stage.name)
                seen = drones.get(key) or _Drones()
                past = _history(history.get(stage.name), hive["metadata"].get("creationTimestamp"))
                changed = max(past.last_up or 0.0, past.last_down or 0.0, past.last_manual or 0.0)
                load = StageLoad(
                    replicas=stage.replicas,
                    ready=seen.ready,
                    backlog=backlog.get(key, 0),
                    in_flight=seen.in_flight,
                    concurrency=_concurrency(agentspec),
                    latency_p50_ms=(
                        sum(seen.latencies) / len(seen.latencies) if seen.latencies else None
                    ),
                    latency_fresh=seen.reported is not None and seen.reported > changed,
                )
                decision = decide(policy, load, past, now)
                if decision is not None:
                    wanted[stage.name] = (stage, decision)
            if wanted and await self._write(hive, wanted, now):
                made.update({(cell, name, s): d for s, (_, d) in wanted.items()})
        return made

    async def _write(
        self, hive: Obj, wanted: dict[str, tuple[Stage, Decision]], now: float
    ) -> bool:
        """Record the stages' new replicas in the autoscaler annotation (the Queen runs that
        many; the spec keeps what the user wrote), conditioned on the Hive's resourceVersion: if
        anyone changed it since we read it, this pass does nothing and the next one decides again
        from what is there (level-triggered, never a lost write)."""
        meta = hive["metadata"]
        changed = copy.deepcopy(hive)
        changed.pop("status", None)
        history = read_history(hive)
        stamp = rfc3339(datetime.fromtimestamp(now, UTC))
        for name, (stage, decision) in wanted.items():
            entry = dict(history.get(name) or {})
            entry.update(
                replicas=decision.replicas,
                specReplicas=stage.spec_replicas,
                previous=stage.replicas,
                direction=decision.direction,
                reason=decision.reason,
                time=stamp,
            )
            entry["lastScaleUp" if decision.direction == "up" else "lastScaleDown"] = stamp
            history[name] = entry
        set_autoscaler_notes(changed, history)
        try:
            await self.store.update(changed)
        except Conflict:
            log.debug(
                "hive changed while scaling it; next pass",
                extra={"cell": meta["namespace"], "hive": meta["name"]},
            )
            return False
        for name, (stage, decision) in wanted.items():
            log.info(
                "stage scaled",
                extra={"cell": meta["namespace"], "hive": meta["name"], "stage": name,
                       "from": stage.replicas, "to": decision.replicas,
                       "reason": decision.reason},
            )  # fmt: skip
            await self.events.record(
                hive,
                "ScaledUp" if decision.direction == "up" else "ScaledDown",
                f"stage {name}: {stage.replicas} -> {decision.replicas} replicas: "
                f"{decision.reason}",
            )
        return True


__all__ = [
    "ANNOTATION",
    "Autoscaler",
    "AutoscalerSettings",
    "Backlog",
    "Decision",
    "History",
    "ScalingPolicy",
    "StageLoad",
    "decide",
    "read_history",
]
