"""The keeper: one per drone, it relays messages between Apiary and one agent process.

The launcher spawns the agent and hands the keeper the ``asyncio.subprocess.Process``
(:meth:`Keeper.attach`); when the agent is restarted the launcher attaches the new process and
every message that was in flight on the old one fails with :class:`AgentCrashed`, so the router
can retry it elsewhere. :meth:`Keeper.deliver` sends one message and returns all outputs of the
agent's turn for it (see docs/waggle.md for the turn rule of each interface).

The keeper owns what is common to every interface: the ``interface.concurrency`` semaphore and
cheap counters (delivered, failed, timeouts, crashes, in flight, a latency histogram). Everything
on the per-message path is a counter increment or a bisect; nothing allocates per message beyond
the message itself and one future.

It also knows which sessions the drone holds a message of (:attr:`Keeper.held`): a session is
held from the moment its message is handed to the agent until the keeper has taken the agent's
final answer for it, or the delivery timed out, crashed or was abandoned. The keeper's HTTP
server lets the drone's token reach only those sessions (docs/comb.md, "What a drone may
reach").

A ``reply: optional`` message (a worker's result handed back to its supervisor) has no answer to
wait for: a stdin agent's exchange returns as soon as it is written. Its session stays held while
the agent works on it all the same — until the agent prints its next line for that message (or
for a later one of the session, which it read after it) or the delivery's timeout passes, or the
process goes — so a supervisor can keep its bookkeeping in the session's Comb.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from typing import Any

from apiary.node.interfaces import (
    AgentCrashed,
    AgentNotReady,
    AgentProtocolError,
    Channel,
    DeliveryCancelled,
    HttpChannel,
    InterfaceConfig,
    ResponseTimeout,
    StdioChannel,
)
from apiary.telemetry import hops, tracing
from apiary.waggle import Message

__all__ = [
    "AgentCrashed",
    "AgentNotReady",
    "AgentProtocolError",
    "DeliveryCancelled",
    "HeldSessions",
    "InterfaceConfig",
    "Keeper",
    "KeeperStats",
    "ResponseTimeout",
]

LINGER_SECONDS = 60.0
"""How long a ``reply: optional`` message's session stays held when its delivery names no timeout
and the agent prints nothing for it."""

#: Upper bounds (seconds) of the latency histogram buckets; the last bucket is everything above.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip


class KeeperStats:
    """Counters for one drone; read by the metrics exporter and ``apiaryctl top``."""

    __slots__ = (
        "crashes",
        "delivered",
        "failed",
        "in_flight",
        "latency_counts",
        "latency_sum",
        "protocol_errors",
        "timeouts",
        "unsolicited",
    )

    def __init__(self) -> None:
        self.delivered = 0
        self.failed = 0
        self.timeouts = 0
        self.crashes = 0
        self.protocol_errors = 0
        self.unsolicited = 0
        self.in_flight = 0
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0

    def observe(self, seconds: float) -> None:
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def quantile(self, q: float) -> float | None:
        """An upper bound of the ``q`` quantile of latency, from the buckets (None if empty)."""
        total = sum(self.latency_counts)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, count in enumerate(self.latency_counts):
            seen += count
            if seen >= rank and count:
                return LATENCY_BUCKETS[i] if i < len(LATENCY_BUCKETS) else float("inf")
        return float("inf")

    def as_dict(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "timeouts": self.timeouts,
            "crashes": self.crashes,
            "protocolErrors": self.protocol_errors,
            "unsolicited": self.unsolicited,
            "inFlight": self.in_flight,
            "latencySecondsSum": self.latency_sum,
            "latencyBuckets": {
                **{str(b): c for b, c in zip(LATENCY_BUCKETS, self.latency_counts, strict=False)},
                "+Inf": self.latency_counts[-1],
            },
        }


class HeldSessions:
    """The sessions of the messages one drone holds now, with a count each (``concurrency`` > 1
    may hold several messages of one session). Keys are sessions as the message names them:
    ``cell/name`` on the wire (the router's session key), or a bare name."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, session: str) -> None:
        self._counts[session] = self._counts.get(session, 0) + 1

    def release(self, session: str) -> None:
        left = self._counts.get(session, 0) - 1
        if left > 0:
            self._counts[session] = left
        else:
            self._counts.pop(session, None)

    def holds(self, cell: str, session: str) -> bool:
        """Whether a message of session ``session`` of ``cell`` is in the drone's hands."""
        counts = self._counts
        return f"{cell}/{session}" in counts or ("/" not in session and session in counts)

    def sessions(self) -> list[str]:
        return sorted(self._counts)

    def __len__(self) -> int:
        return len(self._counts)


class Keeper:
    """Relays messages to one agent process over its declared interface.

    ``interface`` is ``AgentSpec.spec.interface`` (a mapping, validated here) or an
    :class:`InterfaceConfig`. ``port`` overrides ``interface.port`` for http agents whose port the
    launcher allocated. ``on_unsolicited`` sees every output that answers no open message; the
    last ``keep_unsolicited`` of them are also kept in :attr:`unsolicited`.
    """

    def __init__(
        self,
        interface: InterfaceConfig | Mapping[str, Any] | None = None,
        *,
        name: str = "",
        port: int | None = None,
        on_unsolicited: Callable[[Message], None] | None = None,
        clock: Callable[[], float] = time.perf_counter,
        keep_unsolicited: int = 100,
        max_line_bytes: int = 16 << 20,
    ) -> None:
        self.config = (
            interface
            if isinstance(interface, InterfaceConfig)
            else InterfaceConfig.from_spec(interface)
        )
        self.name = name
        self.agent_name = name.rpartition("/")[2]
        """What trace spans call the agent (``gen_ai.agent.name``; the worker says its stage)."""
        self.stats = KeeperStats()
        self.held = HeldSessions()
        """Sessions of the messages the agent holds now: what its keeper token may reach."""
        self.unsolicited: deque[Message] = deque(maxlen=keep_unsolicited)
        self._user_hook = on_unsolicited
        self._clock = clock
        self._sem = asyncio.Semaphore(self.config.concurrency)
        self._lingering: OrderedDict[str, tuple[str, asyncio.TimerHandle]] = OrderedDict()
        """message id → (held session, its release timer): ``reply: optional`` messages the agent
        was given and has printed nothing for yet, in the order they were written."""
        self._late_hook: Callable[[Message, Message], None] | None = None
        self._channel: Channel
        if self.config.type == "http":
            self._channel = HttpChannel(self.config, self._record_unsolicited, port=port)
        else:
            self._channel = StdioChannel(
                self.config.format, self._record_unsolicited, max_line_bytes=max_line_bytes
            )
            self._channel.on_late = self._on_late

    def on_late(self, hook: Callable[[Message, Message], None]) -> None:
        """Send the lines a stdin agent prints after a message's answer (late outputs) to
        ``hook(message, output)`` instead of :attr:`unsolicited`: the worker routes them. An
        http agent answers in its response body, so it has none."""
        self._late_hook = hook

    def _on_late(self, msg: Message, output: Message) -> None:
        if self._lingering:
            self._stop_lingering(msg.id)
        if self._late_hook is not None:
            self._late_hook(msg, output)
        else:
            self._record_unsolicited(output)

    # -- reply: optional holds -------------------------------------------------------------------

    def _linger(self, msg: Message, session: str, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout or LINGER_SECONDS, self._release_lingering, msg.id)
        self._lingering[msg.id] = (session, timer)

    def _release_lingering(self, msg_id: str) -> None:
        entry = self._lingering.pop(msg_id, None)
        if entry is not None:
            self.held.release(entry[0])

    def _stop_lingering(self, msg_id: str) -> None:
        """The agent printed a line for ``msg_id``: it is done with that message and, reading in
        order, with every earlier ``reply: optional`` message of the same session."""
        entry = self._lingering.get(msg_id)
        if entry is None:
            return
        session = entry[0]
        for mid in list(self._lingering):
            held, timer = self._lingering[mid]
            if held == session:
                timer.cancel()
                self._release_lingering(mid)
            if mid == msg_id:
                break

    def _drop_lingering(self) -> None:
        """The process went: nothing it was given is in its hands any more."""
        for mid in list(self._lingering):
            self._lingering[mid][1].cancel()
            self._release_lingering(mid)

    def _record_unsolicited(self, msg: Message) -> None:
        self.stats.unsolicited += 1
        self.unsolicited.append(msg)
        if self._user_hook is not None:
            self._user_hook(msg)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True while an attached process can take messages (http: after its health check)."""
        return self._channel.ready

    @property
    def process(self) -> asyncio.subprocess.Process | None:
        return self._channel.proc

    async def attach(self, proc: asyncio.subprocess.Process) -> None:
        """Adopt a (new) agent process; in-flight messages on the previous one get AgentCrashed.

        A stdin agent is ready at once; an http agent after :meth:`start`.
        """
        self._drop_lingering()
        await self._channel.attach(proc)

    async def start(self, timeout: float = 30.0) -> None:
        """Wait until the agent can take messages (http: ``GET healthPath`` answers 2xx)."""
        await self._channel.start(timeout)

    async def probe(self) -> bool:
        """Liveness: the process runs (and an http agent's health check answers 2xx)."""
        return await self._channel.probe()

    def cancel(self, msg: Message) -> bool:
        """Stop waiting for the agent's answer to ``msg``: its :meth:`deliver` raises
        :class:`DeliveryCancelled` (a late answer is kept with the unsolicited). False when the
        agent holds no such message."""
        return self._channel.cancel(msg.id)

    async def stop(self) -> None:
        """Fail what is in flight and close our pipe ends (the agent sees EOF and may exit)."""
        self._drop_lingering()
        await self._channel.stop()

    # -- the hot path ----------------------------------------------------------------------------

    async def deliver(
        self, msg: Message, timeout: float | None = None, *, session: str | None = None
    ) -> list[Message]:
        """Send ``msg``; return every output of the agent's turn, the last one ending it.

        While the agent has it, ``session`` (default: the message's ``sessionId``) is in
        :attr:`held`; it leaves when this returns or raises, whatever the reason.

        Raises :class:`ResponseTimeout`, :class:`AgentCrashed` (retry elsewhere),
        :class:`AgentProtocolError` (the agent's answer is unusable) or :class:`AgentNotReady`.

        With tracing on, the delivery is an ``invoke_agent`` span and the agent gets the message
        with its ``traceparent`` naming that span, so the agent's own spans join the trace.
        """
        if tracing.TRACER is None:
            return await self._deliver(msg, timeout, session)
        with hops.invoke_agent(
            self.agent_name, self.name, session or msg.session_id, msg.id, msg.traceparent
        ) as span:
            msg.traceparent = tracing.traceparent(span) or msg.traceparent
            return await self._deliver(msg, timeout, session)

    async def _deliver(
        self, msg: Message, timeout: float | None, session: str | None
    ) -> list[Message]:
        stats = self.stats
        held = session or msg.session_id
        linger = False
        async with self._sem:
            stats.in_flight += 1
            if held:
                self.held.add(held)
            t0 = self._clock()
            try:
                outputs = await self._channel.exchange(msg, timeout)
                linger = bool(held) and msg.reply_optional and not outputs
            except ResponseTimeout:
                stats.timeouts += 1
                stats.failed += 1
                raise
            except AgentCrashed:
                stats.crashes += 1
                stats.failed += 1
                raise
            except AgentProtocolError:
                stats.protocol_errors += 1
                stats.failed += 1
                raise
            except BaseException:
                stats.failed += 1
                raise
            finally:
                stats.in_flight -= 1
                if linger and held:  # written, not worked on yet: held until its next line
                    self._linger(msg, held, timeout)
                elif held:
                    self.held.release(held)
            stats.delivered += 1
            stats.observe(self._clock() - t0)
            return outputs
