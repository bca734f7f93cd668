"""The message-path metrics: one :class:`Recorder` per process, with hooks anyone may call.

Why a recorder of its own rather than counters spread through the router, keeper and gateway:
those modules stay free of metric names and labels, and whoever instruments a hop (the router
subclass in :mod:`apiary.telemetry.taps` today, a tracing span tomorrow) calls one method with
plain values. Each hook is a label lookup and an increment — no allocation beyond the label tuple.

Labels are bounded: cells, hives and stages exist in the store, outcomes and reasons are fixed
vocabularies (an unknown error reason is counted as ``other``); never a session or message id.
Model names come from AgentSpecs and from what providers answered: the first :data:`MAX_MODELS`
seen are kept, any later one is counted as ``other``.

Tokens are also priced (:mod:`apiary.telemetry.prices`, an estimate) into
``apiary_llm_cost_usd_total``; a model the price table does not know adds tokens, not cost.

Histogram observations may carry an exemplar (``{"trace_id": …}``): the router passes the trace
of the step it is in, so a slow bucket on a dashboard leads to one real trace. Exemplars are
shown only in the OpenMetrics format (a scraper that asks for ``application/openmetrics-text``).

The process-wide :func:`recorder` owns a registry that also carries the standard ``process_*``,
``python_info`` and ``python_gc_*`` collectors; ``/metrics`` renders it after the API's own.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
)

from apiary.telemetry.prices import Prices, prices_from_env

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
"""Seconds, for hops and agent time: agents answer in milliseconds (echo) to minutes (LLMs)."""

FAST_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
"""Seconds, for journal commits and bus publishes: sub-millisecond to a slow disk or network."""

OUTCOMES = ("ok", "error", "retry", "dead_letter", "duplicate")
"""What became of an answered dispatch: answered (``ok``); answered with an error that ends the
flow (``error``); failed and sent again (``retry``); failed its last attempt (``dead_letter``);
an answer of a dispatch already answered, or of an attempt already superseded (``duplicate``)."""

ERROR_REASONS = frozenset({
    "ResponseTimeout", "AgentCrashed", "AgentNotReady", "AgentProtocolError", "AgentError",
    "OutputSchemaViolation", "TokenBudgetExceeded", "RateLimited", "MaxTurnsExceeded",
    "CircuitOpen", "Cancelled", "Rejected", "DeadLetterPurged",
})  # fmt: skip
"""Error reasons kept as label values; any other is counted as ``other`` (cardinality)."""

_STAGE = ["cell", "hive", "stage"]

MAX_MODELS = 100
"""Distinct ``model`` label values kept; later ones are counted as ``other`` (cardinality: a
provider may answer with any name)."""


class Recorder:
    """The message-path metric families and the hooks that feed them."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        standard: bool = False,
        prices: Prices | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.prices = prices if prices is not None else Prices()
        """What tokens cost (the built-in estimates unless told otherwise)."""
        if standard:  # the prometheus_client defaults, in our registry instead of the global one
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                self.registry.register(collector)
        r = self.registry
        self.inputs = Counter(
            "apiary_session_inputs", "messages sent into sessions, by hive", ["cell", "hive"],
            registry=r,
        )  # fmt: skip
        self.dispatches = Counter(
            "apiary_stage_dispatches",
            "dispatches the router published to a stage (retries counted again)",
            _STAGE,
            registry=r,
        )
        self.messages = Counter(
            "apiary_stage_messages",
            f"answers the router took from a stage, by outcome ({', '.join(OUTCOMES)})",
            [*_STAGE, "outcome"],
            registry=r,
        )
        self.errors = Counter(
            "apiary_stage_errors",
            "failed attempts of a stage by reason (reasons outside a fixed set count as other)",
            [*_STAGE, "reason"],
            registry=r,
        )
        self.hop = Histogram(
            "apiary_stage_hop_duration_seconds",
            "from the router's publish of a dispatch to its answer reaching the router",
            _STAGE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "apiary_stage_queue_wait_seconds",
            "hop time outside the agent: on the bus, queued for a free drone, back (hop - agent)",
            _STAGE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_time = Histogram(
            "apiary_agent_duration_seconds",
            "time the agent took on one message, as its keeper measured it",
            _STAGE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "apiary_llm_tokens",
            "LLM tokens agents used, by type (prompt, completion) and model: the one the provider "
            "answered with when the gateway counted them, else the stage's AgentSpec model",
            [*_STAGE, "model", "type"],
            registry=r,
        )
        self.cost = Counter(
            "apiary_llm_cost_usd",
            "estimated cost in US dollars of the LLM tokens agents used: tokens times a price "
            "table (list prices; models it does not know add nothing)",
            [*_STAGE, "model"],
            registry=r,
        )
        self.journal_commit = Histogram(
            "apiary_journal_commit_duration_seconds",
            "one journal commit (state + entries) by result: ok, conflict, error",
            ["result"],
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.bus_publish = Histogram(
            "apiary_bus_publish_duration_seconds",
            "one publish call to the message bus (a batch counts once) by result: ok, error",
            ["result"],
            buckets=FAST_BUCKETS,
            registry=r,
        )

        self._commits = {r: self.journal_commit.labels(r) for r in ("ok", "conflict", "error")}
        self._publishes = {r: self.bus_publish.labels(r) for r in ("ok", "error")}
        self._stages: dict[tuple[str, str, str], _StageSeries] = {}
        """(cell, hive, stage) → its children of the families above, looked up once."""
        self._models: set[str] = set()

    # ------------------------------------------------------------------------------ hooks

    def _stage(self, cell: str, hive: str, stage: str) -> _StageSeries:
        key = (cell, hive, stage)
        found = self._stages.get(key)
        if found is None:
            found = self._stages[key] = _StageSeries(self, key)
        return found

    def session_input(self, cell: str, hive: str) -> None:
        self.inputs.labels(cell, hive).inc()

    def dispatched(self, cell: str, hive: str, stage: str) -> None:
        self._stage(cell, hive, stage).dispatches.inc()

    def answered(
        self,
        cell: str,
        hive: str,
        stage: str,
        outcome: str,
        *,
        reason: str | None = None,
        hop_seconds: float | None = None,
        agent_seconds: float | None = None,
        exemplar: dict[str, str] | None = None,
    ) -> None:
        """One answer of a stage: its outcome, the failed attempt's reason, and its timings."""
        series = self._stage(cell, hive, stage)
        series.outcome(outcome).inc()
        if reason is not None:
            kept = reason if reason in ERROR_REASONS else "other"
            self.errors.labels(cell, hive, stage, kept).inc()
        if agent_seconds is not None and agent_seconds >= 0:
            series.agent_time.observe(agent_seconds, exemplar)
        if hop_seconds is not None and hop_seconds >= 0:
            series.hop.observe(hop_seconds, exemplar)
            if agent_seconds is not None:
                series.queue_wait.observe(max(0.0, hop_seconds - agent_seconds), exemplar)

    def used_tokens(
        self, cell: str, hive: str, stage: str, prompt: int, completion: int, model: str = ""
    ) -> None:
        """Tokens of ``model`` (the one that answered, where known), and their estimated cost
        when the price table knows the model."""
        label = self._model(model)
        if prompt:
            self.tokens.labels(cell, hive, stage, label, "prompt").inc(prompt)
        if completion:
            self.tokens.labels(cell, hive, stage, label, "completion").inc(completion)
        price = self.prices.of(model) if model else None
        if price is not None and (prompt or completion):
            self.cost.labels(cell, hive, stage, label).inc(price.of(prompt, completion))

    def _model(self, model: str) -> str:
        if model in self._models:
            return model
        if len(self._models) >= MAX_MODELS:
            return "other"
        self._models.add(model)
        return model

    def committed(self, seconds: float, result: str) -> None:
        self._commits[result].observe(seconds)

    def published(self, seconds: float, result: str) -> None:
        self._publishes[result].observe(seconds)


class _StageSeries:
    """One stage's series of the per-stage families (a label lookup saved on each message)."""

    __slots__ = ("_key", "_messages", "_outcomes", "agent_time", "dispatches", "hop", "queue_wait")

    def __init__(self, r: Recorder, key: tuple[str, str, str]) -> None:
        self._key = key
        self._messages = r.messages
        self._outcomes: dict[str, Any] = {}
        self.dispatches = r.dispatches.labels(*key)
        self.hop = r.hop.labels(*key)
        self.queue_wait = r.queue_wait.labels(*key)
        self.agent_time = r.agent_time.labels(*key)

    def outcome(self, outcome: str) -> Any:
        child = self._outcomes.get(outcome)
        if child is None:
            child = self._outcomes[outcome] = self._messages.labels(*self._key, outcome)
        return child


_RECORDER: Recorder | None = None


def recorder() -> Recorder:
    """The process's recorder (made on first use, with the standard process collectors and the
    prices of ``$APIARY_LLM_PRICES`` over the built-in ones)."""
    global _RECORDER
    if _RECORDER is None:
        _RECORDER = Recorder(standard=True, prices=prices_from_env())
    return _RECORDER
