"""A drone's bus side: take dispatches for its stage, hand them to the agent, publish outcomes.

One subscription per ready drone, in the stage's queue group, so each dispatch reaches exactly
one replica. The order per dispatch is: deliver to the agent → publish the Outcome → ack. A crash
anywhere before the ack means redelivery; on a redelivery the worker first asks the control plane
whether the dispatch already has an outcome recorded, so the agent is not asked twice for work
whose answer exists (docs/sessions.md, "Effectively once").

While the agent works, the delivery is marked in progress every ``ack_wait / 3`` seconds, so a
long message is not redelivered to another drone.

Lines the agent prints after a message's answer (late outputs, docs/waggle.md "Turns") follow it
as further Outcomes of the same dispatch, with ``offset`` = their index among its outputs, in the
order printed and never before the answer's own Outcome. One pump task publishes them, so the
reader of the agent's stdout never waits for the bus.

The drone-side guardrails (:mod:`apiary.node.guardrails`, docs/guardrails.md) wrap the delivery:
a drone that may not take a message now (rate limit, per-minute token budget, open circuit)
holds it for a short wait, or hands it back to the queue and leaves the queue group for a long
one, so the work goes to other replicas or waits, never lost; an answer over its token budget or
against ``outputSchema`` becomes the Outcome's error. A drone without them pays one ``is None``
test.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from apiary.bus import Bus, Delivery, Subscription
from apiary.gateway.budget import EXCEEDED, DroneMeter, until_exceeded
from apiary.node.circuit import OPEN, State
from apiary.node.guardrails import GuardrailChain
from apiary.node.inflight import CANCELLED, InFlight, cancel_notice
from apiary.node.interfaces import (
    AgentCrashed,
    AgentNotReady,
    AgentProtocolError,
    DeliveryCancelled,
    ResponseTimeout,
)
from apiary.node.keeper import Keeper
from apiary.telemetry import hops, tracing
from apiary.waggle import Message
from apiary.waggle.envelope import (
    Cancel,
    Dispatch,
    EnvelopeError,
    Outcome,
    cancel_group,
    cancel_subject,
    outcome_subject,
    stage_group,
    stage_subject,
)

log = logging.getLogger("apiary.node.worker")

AnsweredCheck = Callable[[str, str], Awaitable[bool]]
"""(session key, dispatch id) → True when the control plane already has its outcome."""

RETRY_DELAY = 0.05
"""Seconds before a dispatch this drone could not take is offered again (to any replica)."""

HOLD_MAX = 0.5
"""A guardrail wait up to this long holds the message; a longer one hands it back to the queue
and pauses the drone's intake for the wait (docs/guardrails.md)."""

SENT_KEEP = 1024
"""Dispatches remembered (by message id) so that late outputs find theirs."""


class _Sent:
    """One dispatch handed to the agent: where its late outputs go, and the index of the next.
    ``next`` is None until the answer's Outcome is on the bus; lines before that wait in
    ``early`` and ride with the answer."""

    __slots__ = ("dispatch", "early", "next")

    def __init__(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self.early: list[Message] = []
        self.next: int | None = None


class StageWorker:
    def __init__(
        self,
        bus: Bus,
        keeper: Keeper,
        *,
        cell: str,
        hive: str,
        stage: str,
        drone: str,
        guardrails: dict[str, Any] | None = None,
        answered: AnsweredCheck | None = None,
        ack_wait: float = 30.0,
        meter: DroneMeter | None = None,
        on_circuit: Callable[[State], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        stop_grace: float = 10.0,
    ) -> None:
        self.bus = bus
        self.keeper = keeper
        self.cell, self.hive, self.stage, self.drone = cell, hive, stage, drone
        self._fields = {"cell": cell, "hive": hive, "stage": stage, "drone": drone}  # log keys
        timeout = (guardrails or {}).get("responseTimeoutSeconds")
        self.timeout: float | None = float(timeout) if timeout else None
        self.answered = answered
        self.ack_wait = max(ack_wait, (self.timeout or 0) + 5)
        cap = bus.ack_wait_cap
        self._beat = (self.ack_wait if cap is None else min(self.ack_wait, cap)) / 3
        """Seconds between two in-progress marks: a third of the ack wait the bus really uses
        (it may cap ours), so long work is never redelivered while the agent is on it."""
        self._out = outcome_subject(cell, hive)
        self._sub: Subscription | None = None
        self.meter = meter
        """The LLM gateway's token count of this drone: told which message the agent works on,
        it stops the agent's calls at the budgets and says what the message used."""
        self.on_circuit = on_circuit
        self.guard = GuardrailChain.build(guardrails, clock=clock, on_circuit=self._circuit)
        """None when the drone has no drone-side guardrails (raises GuardrailError if bad)."""
        self._stopped = False
        self._timer: asyncio.TimerHandle | None = None
        self._resume_at: float | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.stop_grace = stop_grace
        """Seconds :meth:`stop` waits for the messages the agent holds before it hands them back
        to the bus for another replica (Kubernetes' terminationGracePeriodSeconds)."""
        self.inflight = InFlight(keeper)
        self._cancels: Subscription | None = None
        self._sent: OrderedDict[str, _Sent] = OrderedDict()
        self._late: deque[tuple[_Sent, Message]] = deque()
        self._pumping = False
        keeper.on_late(self._on_late)
        keeper.agent_name = stage  # what its trace spans call the agent (gen_ai.agent.name)
        self._ready = True  # the readiness gate: see gate()

    async def start(self) -> None:
        if self._cancels is None and not self._stopped:  # a copy of every Cancel, paused or not
            self._cancels = await self.bus.subscribe(
                cancel_subject(self.cell, self.hive, self.stage),
                cancel_group(self.cell, self.hive, self.stage, self.drone),
                self._on_cancel,
                max_in_flight=16,
            )
        if self._sub is None and not self._stopped and self._ready:
            sub = await self.bus.subscribe(
                stage_subject(self.cell, self.hive, self.stage),
                stage_group(self.cell, self.hive, self.stage),
                self.handle,
                max_in_flight=self.keeper.config.concurrency,
                ack_wait=self.ack_wait,
            )
            if self._resume_at is not None or self._stopped or self._sub is not None:
                await sub.drain()  # paused (or stopped) while we were joining
            elif not self._ready:  # the readiness gate closed while we were joining
                await sub.drain()
            else:
                self._sub = sub

    async def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        sub, self._sub = self._sub, None
        if sub is not None:  # waits for the handlers: give them the grace period, then stop them
            drain = asyncio.ensure_future(sub.drain())
            done, _ = await asyncio.wait((drain,), timeout=self.stop_grace)
            if not done and self.inflight.stop_all():
                log.info(
                    "drone stopped with messages in flight; handed back",
                    extra={**self._fields, "grace_seconds": self.stop_grace},
                )
            await drain
        cancels, self._cancels = self._cancels, None
        if cancels is not None:
            await cancels.drain()
            group = cancel_group(self.cell, self.hive, self.stage, self.drone)
            try:
                await self.bus.remove_group(cancel_subject(self.cell, self.hive, self.stage), group)
            except Exception as exc:  # the bus is going away too: nothing left to clean
                log.debug("cancel group not removed", extra={**self._fields, "error": str(exc)})
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def circuit(self) -> State | None:
        """The circuit breaker's state (None without one)."""
        return self.guard.circuit if self.guard is not None else None

    # ------------------------------------------------------------- the readiness gate

    def gate(self, ready: bool) -> None:
        """Unready (failing readiness probe, restart): leave the queue group — the bus offers
        the work to the other replicas or keeps it queued — until ready again (node/probes.py)."""
        if ready == self._ready or self._stopped:
            return
        self._ready = ready
        if ready:
            if self._resume_at is None:  # else the guardrail pause joins when it ends
                self._background(self.start())
            return
        sub, self._sub = self._sub, None
        if sub is not None:
            self._background(sub.drain())

    # ------------------------------------------------------------- pausing the intake

    def _circuit(self, state: State) -> None:
        """Open: leave the queue group until the cooldown is over, then join again (half open)
        for the trial message."""
        if state == OPEN and self.guard is not None and self.guard.breaker is not None:
            self._pause(self.guard.breaker.remaining())
        if self.on_circuit is not None:
            self.on_circuit(state)

    def _pause(self, seconds: float) -> None:
        """Take no messages for ``seconds``: leave the queue group, so that the bus offers the
        work to the other replicas (or keeps it queued), and join again afterwards."""
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        if self._resume_at is not None and self._resume_at >= until:
            return
        self._resume_at = until
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(until, self._resume)
        sub, self._sub = self._sub, None
        if sub is not None:
            self._background(sub.drain())

    def _resume(self) -> None:
        self._timer, self._resume_at = None, None
        breaker = self.guard.breaker if self.guard is not None else None
        if breaker is not None and breaker.poll() == OPEN:
            self._pause(max(breaker.remaining(), 1e-3))  # paused for less than the cooldown
            return
        self._background(self.start())

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------------- messages

    async def handle(self, delivery: Delivery) -> None:
        try:
            dispatch = Dispatch.decode(delivery.data)
            message = Message.from_dict(dispatch.message)
        except (EnvelopeError, ValueError) as exc:
            log.warning("dropping a malformed dispatch", extra={**self._fields, "error": str(exc)})
            await delivery.term()
            return
        if tracing.TRACER is None:
            await self._admit(delivery, dispatch, message)
            return
        d = dispatch
        with hops.process(delivery.headers, message.traceparent, d.session, d.hive, d.stage,
                          d.dispatch, self.drone, d.attempt, d.tokens_left):  # fmt: skip
            await self._admit(delivery, dispatch, message)

    async def _admit(self, delivery: Delivery, dispatch: Dispatch, message: Message) -> None:
        guard = self.guard
        if guard is None:
            await self._deliver(delivery, dispatch, message, None)
            return
        wait = guard.admit()
        while wait:
            if wait > HOLD_MAX or self._stopped:  # back to the queue now, and stop taking more
                await delivery.nak(RETRY_DELAY)
                self._pause(wait)
                return
            # A short wait is held here: the busy slot keeps the bus offering the next
            # messages to the other replicas, and a ping-pong through the queue is saved.
            await asyncio.sleep(wait)
            wait = guard.admit()
        try:
            await self._deliver(delivery, dispatch, message, guard)
        except BaseException:
            guard.cancel()  # not answered: the delivery goes back, and so do its token and trial
            raise

    async def _deliver(
        self, delivery: Delivery, dispatch: Dispatch, message: Message, guard: GuardrailChain | None
    ) -> None:
        if (
            delivery.num_delivered > 1
            and self.answered is not None
            and await self.answered(dispatch.session, dispatch.dispatch)
        ):
            if guard is not None:
                guard.cancel()
            await delivery.ack()
            return
        if self.inflight.closed(dispatch.session):  # queued before its session was closed
            if guard is not None:
                guard.cancel()
            await delivery.ack()
            return
        t0 = time.perf_counter()
        error: tuple[str, str] | None = None
        outputs: list[Message] = []
        sent = self._remember(message.id, dispatch)
        heartbeat = _KeepAlive(delivery, self._beat)
        meter = self.meter
        tally = (
            meter.begin(message.id, dispatch.tokens_left, session=dispatch.session)
            if meter is not None
            else None
        )
        try:
            # The dispatch's session (the router's word, not the message's) is what the drone
            # holds, so what its keeper token reaches, until the answer is taken.
            answer = self.keeper.deliver(
                message, timeout=dispatch.timeout or self.timeout, session=dispatch.session
            )
            self.inflight.hold(dispatch.dispatch, dispatch.session, message)
            if tally is not None and tally.bounded:  # watched: stopped when out of tokens
                outputs = await until_exceeded(tally, answer)
            else:
                outputs = await answer
        except DeliveryCancelled:
            why = self.inflight.release(dispatch.dispatch)
            if guard is not None:
                guard.cancel()
            if why == CANCELLED:
                await delivery.ack()  # the router ended the flow: no outcome is wanted
            else:
                await delivery.nak(RETRY_DELAY)  # stopping: another replica takes it
            return
        except (AgentCrashed, AgentNotReady):
            await delivery.nak(RETRY_DELAY)  # another replica (or this one, restarted) takes it
            if guard is not None:
                guard.crashed()
            return
        except ResponseTimeout as exc:
            error = ("ResponseTimeout", str(exc))
        except AgentProtocolError as exc:
            error = ("AgentProtocolError", str(exc))
        finally:
            self.inflight.release(dispatch.dispatch)
            heartbeat.cancel()
            if meter is not None:
                meter.end(message.id, session=dispatch.session)
        usage: tuple[int, int] = (0, 0)
        models: tuple[tuple[str, int, int], ...] = ()
        if tally is not None:
            usage, models = tally.usage, tally.by_model()
            if tally.exceeded is not None:  # the gateway refused a call: a hard stop
                error = (EXCEEDED, tally.exceeded)
        if guard is not None and error is None:
            error = guard.check(outputs, usage)
        if error is not None and tracing.TRACER is not None:
            hops.failed(*error)
        said = outputs
        if sent.early:  # lines printed while we were busy ride along with the answer
            said, sent.early = [*outputs, *sent.early], []
        outcome = Outcome(
            dispatch.dispatch, dispatch.session, dispatch.hive, dispatch.stage, self.drone,
            [o.to_dict() for o in said], (time.perf_counter() - t0) * 1000.0, error,
            dispatch.attempt, usage, models=models,
        )  # fmt: skip
        headers = hops.current_headers() if tracing.TRACER is not None else None
        await self.bus.publish(self._out, outcome.encode(), msg_id=outcome.msg_id, headers=headers)
        sent.next = len(said)
        if sent.early:  # printed during the publish: after the answer, in order
            for late in sent.early:
                self._queue_late(sent, late)
            sent.early = []
        await delivery.ack()
        if guard is not None:
            guard.settle(error, outputs)

    # ------------------------------------------------------------------ cancels

    async def _on_cancel(self, delivery: Delivery) -> None:
        """A session was closed (router/cancel.py): drop it, and tell the agent if it holds one
        of its messages."""
        try:
            cancel = Cancel.decode(delivery.data)
        except EnvelopeError as exc:
            log.warning("dropping a malformed cancel", extra={**self._fields, "error": str(exc)})
            await delivery.term()
            return
        for message in self.inflight.close_session(cancel.session, cancel.dispatches):
            self._background(self._notify(cancel_notice(message, cancel.reason, cancel.message)))
        await delivery.ack()

    async def _notify(self, notice: Message) -> None:
        try:
            await self.keeper.deliver(notice, timeout=5.0)
        except Exception as exc:  # the agent is gone or busy: it was told what it could be
            log.debug("cancel notice not delivered", extra={**self._fields, "error": str(exc)})

    # ------------------------------------------------------------------ late outputs

    def _remember(self, message_id: str, dispatch: Dispatch) -> _Sent:
        sent = self._sent[message_id] = _Sent(dispatch)
        self._sent.move_to_end(message_id)
        if len(self._sent) > SENT_KEEP:
            self._sent.popitem(last=False)
        return sent

    def _on_late(self, message: Message, output: Message) -> None:
        """The keeper's reader saw a line for ``message`` after its answer (never blocks)."""
        sent = self._sent.get(message.id)
        if sent is None:  # forgotten long ago: the keeper keeps it with the unsolicited
            self.keeper.unsolicited.append(output)
            return
        if sent.next is None:
            sent.early.append(output)
        else:
            self._queue_late(sent, output)

    def _queue_late(self, sent: _Sent, output: Message) -> None:
        self._late.append((sent, output))
        if not self._pumping:
            self._pumping = True
            self._background(self._pump())

    async def _pump(self) -> None:
        """Publish queued late outputs in order, consecutive lines of one dispatch together."""
        try:
            while self._late:
                sent, first = self._late.popleft()
                batch = [first]
                while self._late and self._late[0][0] is sent:
                    batch.append(self._late.popleft()[1])
                offset = sent.next or 0
                sent.next = offset + len(batch)  # (an empty answer, as to a notice, had none)
                d = sent.dispatch
                outcome = Outcome(
                    d.dispatch, d.session, d.hive, d.stage, self.drone,
                    [o.to_dict() for o in batch], 0.0, None, d.attempt, late=True, offset=offset,
                )  # fmt: skip
                try:
                    await self.bus.publish(self._out, outcome.encode(), msg_id=outcome.msg_id)
                except Exception as exc:  # the bus is down: the agent's lines cannot be kept
                    log.warning(
                        "late outputs lost",
                        extra={
                            **self._fields,
                            "session": d.session.partition("/")[2],
                            "dispatch": d.dispatch,
                            "outputs": len(batch),
                            "error": str(exc),
                        },
                    )
        finally:
            self._pumping = False


class _KeepAlive:
    """Marks a delivery in progress every ``period`` seconds until cancelled — a timer, not a
    task, so the common case (an answer well within the period) costs one ``call_later``."""

    __slots__ = ("delivery", "handle", "period", "tasks")

    def __init__(self, delivery: Delivery, period: float) -> None:
        self.delivery = delivery
        self.period = period
        self.tasks: set[asyncio.Task[None]] = set()
        self.handle = asyncio.get_running_loop().call_later(period, self._tick)

    def _tick(self) -> None:
        task = asyncio.ensure_future(self.delivery.in_progress())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        self.handle = asyncio.get_running_loop().call_later(self.period, self._tick)

    def cancel(self) -> None:
        self.handle.cancel()
