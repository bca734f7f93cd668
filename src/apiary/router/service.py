"""The router: inputs from the API and outcomes from the drones in, dispatches to the drones out.

Each step is: load the session's state from the journal, decide (pattern engine + the router's
own policy: retries, approvals, dead letters — :mod:`apiary.router.plan`), commit the new state
with every entry the step produced (outputs are recorded here, before anything is forwarded),
then publish the dispatches, then ack. A version conflict means another replica (or a concurrent
outcome of the same session) committed first: load again and redo the step — the engine is
deterministic, so ids repeat and nothing is written twice. See docs/sessions.md and
docs/guardrails.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from apiary.bus import Bus, Delivery, Subscription
from apiary.errors import (
    Conflict,
    FieldDetail,
    TooManyRequests,
    Unavailable,
)
from apiary.journal import Entry, Journal, SessionState
from apiary.patterns import Engine, Step
from apiary.router.cancel import Cancelling
from apiary.router.costs import price_entries
from apiary.router.holds import Holds
from apiary.router.late import LateOutputs
from apiary.router.plan import (
    DEAD,
    DeadLetter,
    Plan,
    Send,
    agent_error,
    dead_letter_message,
    failure_notices,
    hold_approvals,
    join,
    note,
    split,
)
from apiary.router.policy import NOT_RETRIED, HivePolicy, HiveQueue, StageBacklog
from apiary.router.publishing import Publishing
from apiary.router.recovery import Recovery
from apiary.router.sessions import SessionDirectory, SessionInfo
from apiary.telemetry import hops, tracing
from apiary.telemetry.prices import Prices
from apiary.waggle import Message
from apiary.waggle.envelope import (
    OUTCOMES,
    ROUTER_GROUP,
    EnvelopeError,
    Outcome,
)

log = logging.getLogger("apiary.router")

MAX_ATTEMPTS = 100
_BUILT_IN = Prices()
QUEUE_PRUNE_INTERVAL = 1.0
"""Seconds between two checks of a full hive queue against the journal (docs/guardrails.md)."""
Obj = dict[str, Any]


class Router(Holds, Recovery, LateOutputs, Cancelling, Publishing):
    """Runs every session's flows; one per apiaryd replica (outcomes are load-balanced)."""

    def __init__(
        self,
        journal: Journal,
        bus: Bus,
        sessions: SessionDirectory,
        *,
        max_in_flight: int = 512,
        sweep_on_start: bool = True,
        sweep_age: float = 300.0,
        sweep_interval: float = 30.0,
        clock: Callable[[], float] = time.time,
        outcomes: str = OUTCOMES,
        state_cache_size: int = 10_000,
    ) -> None:
        self.journal = journal
        self.bus = bus
        self.sessions = sessions
        self.max_in_flight = max_in_flight
        self.sweep_on_start = sweep_on_start
        self.sweep_age = sweep_age
        self.sweep_interval = sweep_interval
        self.clock = clock
        self.outcomes = outcomes
        """The outcome subjects this router takes: every cell's by default; a narrower filter
        (``apiary.<cell>.*.out``) lets it run on a JetStream stream that covers one cell only."""
        self.state_cache_size = state_cache_size
        self._states: dict[str, tuple[str, int, Obj]] = {}
        """session key → (uid, version, state) after this router's last commit: the document as
        the step built it, handed to the next step of the session without a decode."""
        self._sub: Subscription | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._queues: dict[tuple[str, str], HiveQueue] = {}
        """(cell, hive) → undelivered dispatches, for hives with ``routing.queueLimit``."""
        self.backlog = StageBacklog()
        """(cell, hive, stage) → published, unanswered dispatches: what the autoscaler reads."""
        self._orphaned: set[str] = set()
        """Sessions found without their hive (ended once, then skipped by every sweep)."""
        self.on_status: Callable[[SessionInfo, Obj], None] | None = None
        """Called after a commit whose plan changes the Session's status (output, phase...)."""
        self.on_notice: Callable[[SessionInfo, str, Obj], Awaitable[None]] | None = None
        """Called with (session, event, detail) for what hives may be notified of (webhooks,
        Events, metrics): timeout, guardrail_violation, dead_letter, approval_required,
        session_started, session_completed, session_failed."""
        self.prices: Callable[[str], Awaitable[Prices]] | None = None
        """A Cell's LLM price table (the daemon's :class:`~apiary.router.costs.CellPrices`),
        asked only for hops whose outcome names the models used; None: the built-in table."""

    # ---------------------------------------------------------------------------- lifecycle

    async def run(self, stop: asyncio.Event) -> None:
        """Take outcomes until ``stop``; republish what a crash may have lost, then sweep."""
        self._sub = await self.bus.subscribe(
            self.outcomes, ROUTER_GROUP, self._on_outcome, max_in_flight=self.max_in_flight
        )
        try:
            if self.sweep_on_start:
                await self.sweep(older_than=self.clock())
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.sweep_interval)
                if not stop.is_set():
                    await self.sweep(older_than=self.clock() - self.sweep_age)
        finally:
            for timer in self._timers:
                timer.cancel()
            await self._sub.drain()

    # ------------------------------------------------------------------------------ inputs

    async def submit(
        self, cell: str, session: str, message: Message, *, fresh: bool = False
    ) -> Message:
        """Journal an input and its first dispatches, publish them; returns the input message.

        Idempotent: an input id the session already has is not run again. ``fresh``: the id was
        made by this server just now (no client chose it), so no session can have it yet and the
        journal is not asked — one read less per message on the hot path."""
        info = await self.sessions.get(cell, session)
        message.session_id = info.key
        if not info.open:
            if not fresh and await self.journal.get(info.key, message.id) is not None:
                return message  # a re-send of an input the session took before it ended
            info.check_open()
        if tracing.TRACER is None:
            return await self._submit(info, message, fresh)
        with hops.router_step("input", info.key, info.hive, message.traceparent) as span:
            if message.traceparent is None:  # the journal and every hop know the trace
                message.traceparent = tracing.traceparent(span)
            return await self._submit(info, message, fresh)

    async def _submit(self, info: SessionInfo, message: Message, fresh: bool) -> Message:
        if not fresh and await self.journal.get(info.key, message.id) is not None:
            # A re-send: maybe because a crash came between our commit and the publish.
            await self._redrive(info)
            return message
        engine, policy = await self.sessions.hive(info)
        await self._check_queue(info, engine, policy)
        entry = Entry(info.key, message.id, "input", message.to_dict())

        def plan(state: Obj) -> Plan:
            es, mine = split(state)
            step = engine.on_input(es, message)
            done = self._after_engine(info, policy, step, mine, [entry])
            if not state:
                done.notices.insert(0, ("session_started", {"input": message.id}))
            return done

        await self._run(info, plan)
        return message

    # ---------------------------------------------------------------------------- outcomes

    async def _on_outcome(self, delivery: Delivery) -> None:
        try:
            outcome = Outcome.decode(delivery.data)
        except EnvelopeError as exc:
            log.warning(
                "dropping a malformed outcome",
                extra={"subject": delivery.subject, "error": str(exc)},
            )
            await delivery.term()
            return
        info = await self.sessions.get_by_key(outcome.session)
        if info is not None and outcome.late:  # lines printed after the answer
            await self._late_outcome(info, outcome, delivery)
            return
        cell = outcome.session.partition("/")[0]
        self.backlog.handled(
            cell, outcome.hive, outcome.stage, outcome.session, outcome.dispatch, outcome.attempt
        )
        if info is None:  # the session was deleted: nothing to route to
            await delivery.ack()
            return
        if tracing.TRACER is None:
            await self.handle_outcome(info, outcome)
        else:
            with hops.outcome_step(delivery.headers, outcome.outputs, info.key, info.hive,
                                   outcome.stage, outcome.dispatch, outcome.attempt):  # fmt: skip
                await self.handle_outcome(info, outcome)
        await delivery.ack()

    async def handle_outcome(self, info: SessionInfo, outcome: Outcome) -> Plan | None:
        engine, policy = await self.sessions.hive(info)
        queue = self._queues.get((info.cell, info.hive))
        if queue is not None:
            queue.handled(info.key, outcome.dispatch, outcome.attempt)
        outputs = [Message.from_dict(o, default_type="result") for o in outcome.outputs]
        error = outcome.error or agent_error(outputs)
        budget_error = await self._over_budget(info, policy, outputs, outcome)
        d = outcome.dispatch
        original: Obj = {}
        if error is not None:  # a retry or a dead letter needs the message that failed
            sent = await self.journal.get(info.key, d)
            original = sent.message if sent is not None else {}

        duplicate = False
        prices = await self._prices_of(info) if outcome.models else None

        def priced(state: Obj) -> Plan | None:
            done = plan(state)
            if done is not None and prices is not None:
                price_entries(done.entries, prices)
            return done

        def plan(state: Obj) -> Plan | None:
            nonlocal duplicate
            duplicate = False  # run again on the journal's state: decide afresh
            es, mine = split(state)
            if d not in engine.open_dispatches(es):
                duplicate = True
                return None  # a duplicate: this dispatch was answered already
            attempt = int(mine["attempts"].get(d, 0))
            if error is not None and (outcome.attempt < attempt or d in mine["held"]):
                return None  # a late failure of an attempt already superseded
            if error is not None and error[0] not in NOT_RETRIED and budget_error is None:
                return self._retry_or_dead_letter(
                    info, policy, es, mine, outcome, error, attempt, original
                )
            mine["attempts"].pop(d, None)
            mine["held"].pop(d, None)
            step = engine.on_outcome(es, d, outcome.stage, outputs, budget_error or error)
            return self._after_engine(info, policy, step, mine, [], outcome)

        done = await self._run(info, priced)
        if done is not None and outcome.attempt > 0:  # maybe a dlq replay's answer: settle it
            await self._settle_replay(info, outcome, done, budget_error or error)
        if duplicate:
            # A redelivered outcome: we (or a replica that died) may have committed its step
            # and crashed before publishing what it caused; the ack of this copy would then
            # strand the flow until a sweep. Publishing again is deduplicated by the bus.
            await self._redrive(info)
        return done

    def _retry_or_dead_letter(
        self, info: SessionInfo, policy: HivePolicy, es: Obj, mine: Obj, outcome: Outcome,
        error: tuple[str, str], attempt: int, original: Obj,
    ) -> Plan:  # fmt: skip
        d, key = outcome.dispatch, info.key
        failed = note(key, f"{d}#failed{attempt}", outcome.stage, d,
                      {"reason": error[0], "message": error[1], "attempt": attempt,
                       "drone": outcome.drone}, type="error")  # fmt: skip
        failed.drone, failed.latency_ms = outcome.drone or None, outcome.latency_ms
        failed.prompt_tokens, failed.completion_tokens = outcome.usage  # the attempt's LLM calls
        failed.models = outcome.models
        detail = {"stage": outcome.stage, "drone": outcome.drone, "dispatch": d,
                  "reason": error[0], "message": error[1], "attempt": attempt}  # fmt: skip
        notices = failure_notices(error[0], detail)
        if attempt < policy.retry.max_retries:
            delay = policy.retry.delay(attempt)
            mine["attempts"][d] = attempt + 1
            send = Send(d, outcome.stage, original, attempt + 1, delay)
            return Plan(join(es, mine), [failed], [send], notices=notices)
        mine["held"][d] = {"reason": DEAD, "stage": outcome.stage, "error": list(error),
                           "attempts": attempt + 1, "message": original}  # fmt: skip
        dead = DeadLetter(d, outcome.stage, original, attempt + 1, error[0], error[1])
        status = {"phase": "Failed", "reason": DEAD,
                  "message": dead_letter_message(mine["held"][d])}  # fmt: skip
        notices.append(("dead_letter", {**detail, "attempts": attempt + 1}))
        return Plan(join(es, mine), [failed], [], [dead], status, notices=notices)

    def _after_engine(
        self, info: SessionInfo, policy: HivePolicy, step: Step, mine: Obj,
        extra: list[Entry], outcome: Outcome | None = None,
    ) -> Plan:  # fmt: skip
        send, notes, status = hold_approvals(step, mine, policy.approval_stages, info.key)
        entries = [*extra, *self._entries(info, step, outcome), *notes]
        if step.finals:
            status["output"] = step.finals[-1].message.payload
            if info.job:
                status["phase"] = "Succeeded"
        if step.failure is not None:
            status["reason"], status["message"] = step.failure
            if info.job:
                status["phase"] = "Failed"
        sends = [Send(d.id, d.stage, d.message.to_dict(), int(mine["attempts"].get(d.id, 0)))
                 for d in send]  # fmt: skip
        notices: list[tuple[str, Obj]] = []
        if status.get("pendingApproval"):
            notices.append(("approval_required", {"stages": status["pendingApproval"]}))
        for final in step.finals:
            notices.append(("session_completed", {"input": final.parent}))
        if step.failure is not None:
            detail = {"reason": step.failure[0], "message": step.failure[1]}
            notices += failure_notices(step.failure[0], detail)
            notices.append(("session_failed", detail))
        return Plan(join(step.state, mine), entries, sends, [], status, step, notices)

    async def _prices_of(self, info: SessionInfo) -> Prices:
        if self.prices is None:
            return _BUILT_IN
        return await self.prices(info.cell)

    async def _over_budget(
        self, info: SessionInfo, policy: HivePolicy, outputs: list[Message], outcome: Outcome
    ) -> tuple[str, str] | None:
        budget = policy.session_token_budget
        if budget is None:
            return None
        _, prompt, completion = await self.journal.usage(info.key)
        used = prompt + completion + sum(o.usage.total for o in outputs if o.usage is not None)
        used += sum(outcome.usage)
        if used <= budget:
            return None
        return ("TokenBudgetExceeded",
                f"the session used {used} tokens, over its budget of {budget}")  # fmt: skip

    async def _check_queue(self, info: SessionInfo, engine: Engine, policy: HivePolicy) -> None:
        """429 when the hive has ``routing.queueLimit`` undelivered dispatches (this replica's
        count, pruned against the journal before refusing: outcomes handled by another replica
        never reached this count)."""
        where = (info.cell, info.hive)
        limit = policy.queue_limit
        queue = self._queues.get(where)
        if limit is None:
            self._queues.pop(where, None)
            return
        if queue is None:
            queue = self._queues[where] = HiveQueue(limit)
        queue.limit = limit
        if not queue.full:
            return
        now = time.monotonic()
        if now - queue.pruned_at >= QUEUE_PRUNE_INTERVAL:
            queue.pruned_at = now
            await self._prune(queue, engine)
        if queue.full:
            why = f"the hive has {len(queue.open)} undelivered messages, at its queue limit"
            raise TooManyRequests(
                f"hive {info.hive!r}: {why} of {limit}; retry later",
                [FieldDetail("spec.routing.queueLimit", f"{why} of {limit}")],
            )

    async def _prune(self, queue: HiveQueue, engine: Engine) -> None:
        """Forget counted dispatches the journal says are answered, held or gone."""
        sessions = {session for session, _ in queue.open}
        for session in sessions:
            es, mine = split((await self.journal.load(session)).state)
            still = set(engine.open_dispatches(es)) - set(mine["held"])
            for key in [k for k in queue.open if k[0] == session and k[1] not in still]:
                del queue.open[key]

    # ------------------------------------------------------------------------------ steps

    async def _run(self, info: SessionInfo, make: Callable[[Obj], Plan | None]) -> Plan | None:
        """Plan → commit (retrying on conflicts) → side effects. None: nothing to do."""
        fresh = False  # True once the state came from the journal, not this router's cache
        for _ in range(MAX_ATTEMPTS):
            current, cached = await self._load(info, fresh)
            try:
                plan = make(current.state)
                if plan is None:
                    self._states.pop(info.key, None)
                    if cached:
                        # "Nothing to do" from our own copy may be wrong: another replica may
                        # have committed since (opening the dispatch this outcome answers). A
                        # decision that commits nothing is never version-checked, so decide
                        # again on what the journal holds.
                        fresh = True
                        continue
                    return None
                version = await self.journal.commit(
                    info.key, expect_version=current.version, state=plan.state, entries=plan.entries
                )
            except BaseException:
                self._states.pop(info.key, None)
                raise
            if version is None:  # someone else committed first: read theirs and redo the step
                self._states.pop(info.key, None)
                continue
            self._remember(info, version, plan.state)
            await self._effects(info, plan)
            return plan
        raise Conflict(f"session {info.key}: too many concurrent updates")

    async def _load(self, info: SessionInfo, fresh: bool = False) -> tuple[SessionState, bool]:
        """The session's state as this router last committed it, else from the journal.

        Saves a journal read and a JSON decode per step (a thread hop and a query on SQLite, a
        round trip on PostgreSQL). Safe with other writers: a stale cache only makes the commit's
        version check fail, and the step is redone from the journal. Keyed by the session's uid
        too, so a deleted and re-created session never inherits its predecessor's state.

        The cached document is *taken*, not copied: the step owns it (it may change it in place)
        and only the state it commits goes back in (``_remember``). A concurrent step of the same
        session meanwhile finds nothing cached and reads the journal — so no two steps ever share
        a document, and a step that fails or conflicts leaves nothing behind. The second value
        says whether the state came from the cache; ``fresh`` reads the journal whatever is
        cached."""
        cached = self._states.pop(info.key, None)
        if cached is not None and cached[0] == info.uid and not fresh:
            return SessionState(cached[1], cached[2]), True
        return await self.journal.load(info.key), False

    def _remember(self, info: SessionInfo, version: int, state: Obj) -> None:
        """Cache the state just committed (the journal has its own serialised copy)."""
        self._states.pop(info.key, None)  # re-insert: the dict's order is least recently used
        self._states[info.key] = (info.uid, version, state)
        while len(self._states) > self.state_cache_size:
            del self._states[next(iter(self._states))]

    async def _effects(self, info: SessionInfo, plan: Plan) -> None:
        if plan.status and self.on_status is not None:
            self.on_status(info, plan.status)
        left = await self._tokens_left(info) if plan.send else None
        now = [self._publication(info, s, left) for s in plan.send if s.delay <= 0]
        for s in plan.send:
            if s.delay > 0:
                self._later(s.delay, self._publish_one(info, s))
        for dead in plan.dead:
            await self._file_dead_letter(info, dead)
        if tracing.TRACER is not None:
            hops.notices(plan.notices)
            for s in plan.send:
                if s.delay > 0:
                    hops.retry_scheduled(s.stage, s.id, s.attempt, s.delay)
        if self.on_notice is not None:
            for event, detail in plan.notices:
                try:
                    await self.on_notice(info, event, detail)
                except Exception:  # a notification must never break routing
                    log.exception("notice failed", extra={**info.log_fields, "notice": event})
        if not now:
            return
        try:
            await self.bus.publish_many(now)
        except Exception as exc:  # journaled already: the sweep publishes them later
            log.warning(
                "publish failed, the sweep will retry",
                extra={**info.log_fields, "error": str(exc)},
            )
            raise Unavailable(f"the message bus is unavailable: {exc}") from exc

    @staticmethod
    def _entries(info: SessionInfo, step: Step, outcome: Outcome | None) -> list[Entry]:
        out = []
        gateway_usage = outcome.usage if outcome is not None else (0, 0)
        for r in step.records:
            msg = r.message
            entry = Entry(info.key, r.id, r.kind, msg.to_dict(), stage=r.stage, parent=r.parent)
            if outcome is not None and r.kind in ("output", "error", "event"):
                entry.drone = outcome.drone or None
                entry.latency_ms = outcome.latency_ms
            if msg.usage is not None:
                entry.prompt_tokens = msg.usage.prompt_tokens
                entry.completion_tokens = msg.usage.completion_tokens
            elif r.kind in ("output", "error") and gateway_usage != (0, 0):
                entry.prompt_tokens, entry.completion_tokens = gateway_usage
                entry.models = outcome.models if outcome is not None else ()  # priced later
                gateway_usage = (0, 0)  # counted once, on the first output
            out.append(entry)
        for d in step.dispatches:
            out.append(Entry(info.key, d.id, "dispatch", d.message.to_dict(), stage=d.stage,
                             parent=d.parent))  # fmt: skip
        return out


__all__ = ["Engine", "Router"]
