"""Where apiaryd's message path meets the :class:`~apiary.telemetry.metrics.Recorder`.

The router, journal and bus know nothing of metrics; apiaryd builds instrumented versions of the
objects it hands them, so nothing on the message path imports a metric:

* :class:`MeteredRouter` — a :class:`Router` whose public ``submit`` and ``handle_outcome`` count
  inputs and answers (outcome, reason, agent time, tokens and their estimated cost by the model
  that answered, as the node's gateway counted them — or the stage's AgentSpec model); its
  ``backlog`` is a :class:`TimedBacklog`, which already sees every publish and answer of each
  dispatch with its (cell, hive, stage) and publish time, so the hop time costs one subtraction;
* :class:`TimedBus` — a :class:`Bus` that times each publish call;
* :func:`timed_journal` — the journal with its ``commit`` timed (conflict vs ok vs error).

While the router handles a message, its log lines carry ``cell``, ``hive``, ``session`` and
``stage`` as keys (:func:`apiary.logging.set_fields`).

Each costs a clock read and a label lookup per call; the histograms' buckets are fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from apiary.bus import Bus
from apiary.bus.base import Handler, Publish, Subscription
from apiary.controllers.templates import hive_stages
from apiary.errors import ApiaryError
from apiary.journal import Journal
from apiary.journal.model import Entry
from apiary.logging import reset_fields, set_fields
from apiary.resources.llm import merged_llm
from apiary.router import Router, SessionInfo
from apiary.router.plan import Plan
from apiary.router.policy import StageBacklog
from apiary.store import Store
from apiary.telemetry import tracing
from apiary.telemetry.metrics import Recorder, recorder
from apiary.waggle import Message
from apiary.waggle.envelope import Outcome

MAX_PENDING_HOPS = 10_000
"""Hop times waiting for their answer to be handled; more means answers are not handled (a
session deleted mid-flight): the oldest are dropped."""


@dataclass
class TimedBacklog(StageBacklog):
    """The router's backlog, also counting dispatches and timing each answered one."""

    recorder: Recorder = field(default_factory=recorder)
    hops: dict[tuple[str, str], float] = field(default_factory=dict)
    """(session key, dispatch) → seconds from publish to answer, until the answer is handled."""

    def published(self, cell: str, hive: str, stage: str, session: str, dispatch: str,
                  attempt: int) -> None:  # fmt: skip
        super().published(cell, hive, stage, session, dispatch, attempt)
        self.recorder.dispatched(cell, hive, stage)

    def handled(self, cell: str, hive: str, stage: str, session: str, dispatch: str,
                attempt: int) -> None:  # fmt: skip
        group = self.open.get((cell, hive, stage))
        held = group.get((session, dispatch)) if group is not None else None
        if held is not None and held[0] <= attempt:
            if len(self.hops) >= MAX_PENDING_HOPS:
                del self.hops[next(iter(self.hops))]
            self.hops[(session, dispatch)] = self.clock() - held[1]
        super().handled(cell, hive, stage, session, dispatch, attempt)


@dataclass
class StageModels:
    """The model a stage's tokens are counted under when the Outcome names none: its AgentSpec's
    ``spec.llm.model`` over its Cell's (``merged_llm``, as its drones get it: the gateway's default
    for requests that name none), ``""`` when unset. Three store reads per stage every ``ttl``
    seconds, and only for answers that used tokens."""

    store: Store
    ttl: float = 60.0
    clock: Callable[[], float] = time.monotonic
    cache: dict[tuple[str, str, str], tuple[str, float]] = field(default_factory=dict)

    async def model(self, cell: str, hive: str, stage: str) -> str:
        key = (cell, hive, stage)
        hit = self.cache.get(key)
        now = self.clock()
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        model = ""
        try:
            stages, _ = hive_stages(await self.store.get("Hive", cell, hive))
            ref = next((s.agent_ref for s in stages if s.name == stage), None)
            if ref:
                spec = (await self.store.get("AgentSpec", cell, ref)).get("spec") or {}
                try:
                    cell_llm = ((await self.store.get("Cell", "", cell)).get("spec") or {}).get(
                        "llm"
                    )
                except ApiaryError:  # a cell without its object: the AgentSpec's alone
                    cell_llm = None
                llm, _ = merged_llm(spec.get("llm"), cell_llm)
                model = str((llm or {}).get("model") or "")
        except ApiaryError:  # deleted meanwhile, or the store is away: count it unnamed
            pass
        if len(self.cache) >= MAX_PENDING_HOPS:
            self.cache.clear()
        self.cache[key] = (model, now)
        return model


class MeteredRouter(Router):
    """A :class:`Router` that tells its :class:`Recorder` what it did (docs/observability.md)."""

    def __init__(self, *args: Any, metrics: Recorder | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics or recorder()
        self.timed_backlog = TimedBacklog(recorder=self.metrics)
        self.backlog = self.timed_backlog
        self.models = StageModels(self.sessions.store)

    async def submit(
        self, cell: str, session: str, message: Message, *, fresh: bool = False
    ) -> Message:
        fields = set_fields({"cell": cell, "session": session})
        try:
            out = await super().submit(cell, session, message, fresh=fresh)
        finally:
            reset_fields(fields)
        try:
            hive = (await self.sessions.get(cell, session)).hive  # cached by the submit itself
        except ApiaryError:  # deleted this instant: the input was taken all the same
            hive = ""
        self.metrics.session_input(cell, hive)
        return out

    async def handle_outcome(self, info: SessionInfo, outcome: Outcome) -> Plan | None:
        hop = self.timed_backlog.hops.pop((outcome.session, outcome.dispatch), None)
        cell, hive, stage = info.cell, info.hive, outcome.stage
        fields = set_fields({"cell": cell, "hive": hive, "session": info.name, "stage": stage})
        try:
            plan = await super().handle_outcome(info, outcome)
        finally:
            reset_fields(fields)
        reason = outcome.error[0] if outcome.error is not None else _agent_error(outcome)
        self.metrics.answered(
            cell, hive, stage, _outcome(plan, outcome, reason), reason=reason,
            hop_seconds=hop, agent_seconds=outcome.latency_ms / 1000.0, exemplar=_exemplar(),
        )  # fmt: skip
        if plan is not None:
            for model, prompt, completion in _tokens(outcome):
                if model is None:
                    model = await self.models.model(cell, hive, stage)
                self.metrics.used_tokens(cell, hive, stage, prompt, completion, model)
        return plan


def _outcome(plan: Plan | None, outcome: Outcome, reason: str | None) -> str:
    if plan is None:
        return "duplicate"
    if plan.dead:
        return "dead_letter"
    if any(s.id == outcome.dispatch for s in plan.send):
        return "retry"
    failed = plan.step is not None and plan.step.failure is not None
    return "error" if reason is not None or failed else "ok"


def _exemplar() -> dict[str, str] | None:
    """The trace of the router step we are in (tracing on and sampled), for exemplars."""
    fields = tracing.current_trace_fields()
    return {"trace_id": fields["trace_id"]} if fields else None


def _agent_error(outcome: Outcome) -> str | None:
    """``AgentError`` when the agent's final answer is of type error (as the router reads it)."""
    for out in outcome.outputs:
        if isinstance(out, dict) and not out.get("more"):
            return "AgentError" if out.get("type") == "error" else None
    return None


Tokens = tuple[tuple[str | None, int, int], ...]
"""(model, prompt, completion); model None: the stage's AgentSpec model (:class:`StageModels`)."""


def _tokens(outcome: Outcome) -> Tokens:
    """What the router journals: the outputs' own usage (under the stage's model), else what the
    gateway counted — by the model each call was answered by, the rest (from a node that does
    not tell models apart) under the stage's model."""
    prompt = completion = 0
    for out in outcome.outputs:
        usage = out.get("usage") if isinstance(out, dict) else None
        if isinstance(usage, dict):
            p, c = usage.get("promptTokens", 0), usage.get("completionTokens", 0)
            prompt += p if type(p) is int and p > 0 else 0
            completion += c if type(c) is int and c > 0 else 0
    if prompt or completion:
        return ((None, prompt, completion),)
    prompt, completion = outcome.usage
    if not outcome.models:
        return ((None, prompt, completion),) if prompt or completion else ()
    for _, p, c in outcome.models:
        prompt, completion = prompt - p, completion - c
    rest = ((None, max(0, prompt), max(0, completion)),) if prompt > 0 or completion > 0 else ()
    return (*outcome.models, *rest)


class TimedBus(Bus):
    """Another bus, with each publish call timed; everything else goes straight through."""

    def __init__(self, inner: Bus, metrics: Recorder | None = None) -> None:
        self.inner = inner
        self.url = inner.url
        self.ack_wait_cap = inner.ack_wait_cap
        self.metrics = metrics or recorder()

    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        started, result = time.perf_counter(), "error"
        try:
            await self.inner.publish(subject, data, msg_id=msg_id, headers=headers)
            result = "ok"
        finally:
            self.metrics.published(time.perf_counter() - started, result)

    async def publish_many(self, items: Iterable[Publish | tuple[str, bytes]]) -> None:
        started, result = time.perf_counter(), "error"
        try:
            await self.inner.publish_many(items)
            result = "ok"
        finally:
            self.metrics.published(time.perf_counter() - started, result)

    async def subscribe(
        self,
        subject: str,
        group: str,
        handler: Handler,
        *,
        max_in_flight: int = 1,
        ack_wait: float = 30.0,
    ) -> Subscription:
        return await self.inner.subscribe(
            subject, group, handler, max_in_flight=max_in_flight, ack_wait=ack_wait
        )

    async def remove_group(self, subject: str, group: str) -> None:
        await self.inner.remove_group(subject, group)


class _TimedJournal:
    """A journal whose ``commit`` is timed; every other attribute is the journal's own."""

    def __init__(self, inner: Journal, metrics: Recorder) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def commit(
        self, session: str, *, expect_version: int, state: dict[str, Any], entries: list[Entry]
    ) -> int | None:
        started, result = time.perf_counter(), "error"
        try:
            version = await self._inner.commit(
                session, expect_version=expect_version, state=state, entries=entries
            )
            result = "ok" if version is not None else "conflict"
            return version
        finally:
            self._metrics.committed(time.perf_counter() - started, result)


def timed_journal(journal: Journal, metrics: Recorder | None = None) -> Journal:
    """``journal`` as the router should use it: commits timed (one wrapper, not a subclass of
    every backend)."""
    return cast(Journal, _TimedJournal(journal, metrics or recorder()))
