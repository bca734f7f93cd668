"""The router: inputs from the API and outcomes from the drones in, dispatches to the drones out.

Each step is: load the session's state from the journal, run the pattern engine, commit the new
state with every entry the step produced (outputs are recorded here, before anything is
forwarded), then publish the dispatches, then ack. A version conflict means another replica (or a
concurrent outcome of the same session) committed first: load again and redo the step — the
engine is deterministic, so ids repeat and nothing is written twice. See docs/sessions.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from apiary.bus import Bus, Delivery, Publish, Subscription
from apiary.errors import Conflict, Unavailable
from apiary.journal import Entry, Journal
from apiary.patterns import Engine, Step
from apiary.router.sessions import SessionDirectory, SessionInfo
from apiary.waggle import Message
from apiary.waggle.envelope import (
    OUTCOMES,
    ROUTER_GROUP,
    Dispatch,
    EnvelopeError,
    Outcome,
    stage_subject,
)

log = logging.getLogger("apiary.router")

MAX_ATTEMPTS = 100


class Router:
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
        (``apiary.<cell>.*.out``) lets it live on a JetStream stream that covers one cell only."""
        self._sub: Subscription | None = None
        self.on_settled: Callable[[SessionInfo, Step], None] | None = None
        """Called after a step that produced finals or a failure (session status updates)."""

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
            await self._sub.drain()

    async def sweep(self, older_than: float) -> int:
        """Publish again every dispatch that has no outcome and is older than ``older_than``.

        After a crash of an embedded apiaryd the in-process bus lost what it held; the journal did
        not. Republishing is harmless: ids are the same, duplicates are dropped by the router."""
        count = 0
        while True:
            entries = await self.journal.open_dispatches(older_than, limit=1000)
            fresh = [e for e in entries if e.created <= older_than]
            if not fresh:
                return count
            items = []
            for e in fresh:
                info = await self.sessions.get_by_key(e.session)
                if info is None:
                    continue
                d = Dispatch(e.id, e.session, info.hive, e.stage or "", e.message,
                             info.timeout_for(e.stage))  # fmt: skip
                items.append(
                    Publish(stage_subject(info.cell, info.hive, d.stage), d.encode(), d.dispatch)
                )
            await self.bus.publish_many(items)
            count += len(items)
            if len(entries) < 1000:
                return count
            older_than = min(older_than, fresh[-1].created - 1e-6)

    # ------------------------------------------------------------------------------ inputs

    async def submit(self, cell: str, session: str, message: Message) -> Message:
        """Journal an input and its first dispatches, publish them; returns the input message.

        Idempotent: an input id the session already has is not run again."""
        info = await self.sessions.get(cell, session)
        info.check_open()
        message.session_id = info.key
        if await self.journal.get(info.key, message.id) is not None:
            return message
        engine = await self.sessions.engine(info)
        entry = Entry(info.key, message.id, "input", message.to_dict())
        step = await self._commit(info, lambda st: engine.on_input(st, message), [entry])
        if step is not None:
            await self._publish(info, step)
        return message

    # ---------------------------------------------------------------------------- outcomes

    async def _on_outcome(self, delivery: Delivery) -> None:
        try:
            outcome = Outcome.decode(delivery.data)
        except EnvelopeError as exc:
            log.warning("dropping a malformed outcome on %s: %s", delivery.subject, exc)
            await delivery.term()
            return
        info = await self.sessions.get_by_key(outcome.session)
        if info is None:  # the session was deleted: nothing to route to
            await delivery.ack()
            return
        await self.handle_outcome(info, outcome)
        await delivery.ack()

    async def handle_outcome(self, info: SessionInfo, outcome: Outcome) -> Step | None:
        engine = await self.sessions.engine(info)
        outputs = [Message.from_dict(o, default_type="result") for o in outcome.outputs]

        def step(state: dict[str, Any]) -> Step | None:
            if outcome.dispatch not in engine.open_dispatches(state):
                return None  # a duplicate: this dispatch was answered already
            return engine.on_outcome(state, outcome.dispatch, outcome.stage, outputs, outcome.error)

        done = await self._commit(info, step, [], outcome)
        if done is not None:
            await self._publish(info, done)
        return done

    # ------------------------------------------------------------------------------ steps

    async def _commit(
        self,
        info: SessionInfo,
        make: Callable[[dict[str, Any]], Step | None],
        extra: Sequence[Entry],
        outcome: Outcome | None = None,
    ) -> Step | None:
        for _ in range(MAX_ATTEMPTS):
            current = await self.journal.load(info.key)
            step = make(current.state)
            if step is None:
                return None
            entries = [*extra, *self._entries(info, step, outcome)]
            version = await self.journal.commit(
                info.key, expect_version=current.version, state=step.state, entries=entries
            )
            if version is not None:
                if (step.finals or step.failure) and self.on_settled is not None:
                    self.on_settled(info, step)
                return step
        raise Conflict(f"session {info.key}: too many concurrent updates")

    @staticmethod
    def _entries(info: SessionInfo, step: Step, outcome: Outcome | None) -> list[Entry]:
        out = []
        for r in step.records:
            msg = r.message
            entry = Entry(info.key, r.id, r.kind, msg.to_dict(), stage=r.stage, parent=r.parent)
            if outcome is not None and r.kind in ("output", "error", "event"):
                entry.drone = outcome.drone or None
                entry.latency_ms = outcome.latency_ms
            if msg.usage is not None:
                entry.prompt_tokens = msg.usage.prompt_tokens
                entry.completion_tokens = msg.usage.completion_tokens
            out.append(entry)
        for d in step.dispatches:
            out.append(Entry(info.key, d.id, "dispatch", d.message.to_dict(), stage=d.stage,
                             parent=d.parent))  # fmt: skip
        return out

    async def _publish(self, info: SessionInfo, step: Step) -> None:
        if not step.dispatches:
            return
        items = []
        for d in step.dispatches:
            env = Dispatch(d.id, info.key, info.hive, d.stage, d.message.to_dict(),
                           info.timeout_for(d.stage))  # fmt: skip
            items.append(
                Publish(stage_subject(info.cell, info.hive, d.stage), env.encode(), env.msg_id)
            )
        try:
            await self.bus.publish_many(items)
        except Exception as exc:  # journaled already: the sweep publishes them later
            log.warning("session %s: publish failed, the sweep will retry: %s", info.key, exc)
            raise Unavailable(f"the message bus is unavailable: {exc}") from exc


__all__ = ["Engine", "Router"]
