"""The in-process bus: the embedded default, asyncio only, and on every message's path.

Each (filter, group) pair is a *group* holding one :class:`Mailbox`; members of the group are
workers waiting on that mailbox, so a message goes to exactly one of them and the longest-waiting
worker gets it first. A publish looks up the groups whose filter matches (cached per subject),
and puts one message copy in each — that is how different groups each get every message.

Like a JetStream durable consumer, a group outlives its members: messages published while a
group has no members wait for the next one (``remove_group`` forgets a group). Messages for a
subject no group has subscribed to yet are kept (up to ``RETAIN_UNROUTED``, oldest dropped first)
and go to the first group that subscribes to them. Nothing here survives the process: the session
journal in the store is what makes accepted work durable in embedded mode.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping

from apiary.bus.base import (
    DEDUPE_WINDOW,
    ERROR_DELAY,
    Bus,
    Delivery,
    Handler,
    Subscription,
    check_options,
    check_payload,
)
from apiary.bus.inflight import InFlight
from apiary.bus.mailbox import Mailbox
from apiary.bus.subjects import check_filter, check_group, check_subject, matches
from apiary.bus.workers import WorkerPool
from apiary.errors import Unavailable

_ROUTE_CACHE_MAX = 10_000
RETAIN_UNROUTED = 100_000
"""Most messages kept for subjects no group has subscribed to yet."""


class _Message:
    __slots__ = ("data", "deliveries", "headers", "msg_id", "subject")

    def __init__(
        self, subject: str, data: bytes, headers: Mapping[str, str] | None, msg_id: str | None
    ) -> None:
        self.subject = subject
        self.data = data
        self.headers = headers
        self.msg_id = msg_id
        self.deliveries = 0


class _Group:
    __slots__ = ("filter", "mailbox", "members", "name", "tokens")

    def __init__(self, filter_subject: str, name: str) -> None:
        self.filter = filter_subject
        self.name = name
        self.tokens = check_filter(filter_subject)
        self.mailbox: Mailbox[_Message] = Mailbox()
        self.members: set[_MemorySubscription] = set()


class _MemoryDelivery(Delivery):
    __slots__ = ("_msg", "_sub")

    def __init__(self, msg: _Message, sub: _MemorySubscription) -> None:
        super().__init__(msg.subject, msg.data, msg.headers, msg.msg_id, msg.deliveries)
        self._msg = msg
        self._sub = sub

    async def ack(self) -> None:
        if not self.settled:
            self.settled = True
            self._sub.inflight.settle(self)

    async def term(self) -> None:
        await self.ack()

    async def nak(self, delay: float | None = None) -> None:
        if self.settled:
            return
        self.settled = True
        self._sub.inflight.settle(self)
        self._sub.bus._requeue(self._sub._group, self._msg, delay)

    async def in_progress(self) -> None:
        if not self.settled:
            self._sub.inflight.touch(self)


class _MemorySubscription(Subscription):
    def __init__(
        self, bus: MemoryBus, group: _Group, handler: Handler, max_in_flight: int, ack_wait: float
    ) -> None:
        self.bus = bus
        self._group = group
        self.subject = group.filter
        self.group = group.name
        self.inflight = InFlight(max_in_flight, ack_wait, self._expired)
        self._pool: WorkerPool[_Message] = WorkerPool(
            name=f"{group.filter}/{group.name}",
            handler=handler,
            mailbox=group.mailbox,
            inflight=self.inflight,
            deliver=self._deliver,
            give_back=self._give_back,
            error_delay=bus.error_delay,
        )
        self._done = False
        group.members.add(self)
        self._pool.start(max_in_flight)

    def _deliver(self, msg: _Message) -> Delivery:
        msg.deliveries += 1
        delivery = _MemoryDelivery(msg, self)
        self.inflight.add(delivery)
        return delivery

    def _give_back(self, msg: _Message) -> None:
        self._group.mailbox.put(msg, front=True)

    def _expired(self, delivery: Delivery) -> None:
        assert isinstance(delivery, _MemoryDelivery)
        delivery.settled = True
        self._group.mailbox.put(delivery._msg, front=True)

    async def drain(self) -> None:
        await self._leave(cancel=False)

    async def _leave(self, *, cancel: bool) -> None:
        if self._done:
            return
        self._done = True
        await self._pool.stop(cancel=cancel)
        self.inflight.stop_timer()
        for delivery in self.inflight.take_all():
            assert isinstance(delivery, _MemoryDelivery)
            delivery.settled = True
            self._group.mailbox.put(delivery._msg, front=True)
        self._group.members.discard(self)
        self.bus._subs.discard(self)


class MemoryBus(Bus):
    """In-process bus. ``clock`` (seconds, monotonic) drives the dedupe window; tests inject it."""

    def __init__(
        self,
        url: str = "memory://",
        *,
        dedupe_window: float = DEDUPE_WINDOW,
        error_delay: float = ERROR_DELAY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.dedupe_window = dedupe_window
        self.error_delay = error_delay
        self._clock = clock
        self._groups: dict[tuple[str, str], _Group] = {}
        self._routes: dict[str, list[_Group]] = {}
        self._seen: dict[str, float] = {}
        self._waiting: deque[_Message] = deque()
        """Messages published while no group matched their subject, oldest first, bounded by
        ``RETAIN_UNROUTED``: handed to the first group that subscribes to them (as JetStream
        keeps them for a consumer created later), so work sent to a stage whose drones are still
        starting is not dropped."""
        self._subs: set[_MemorySubscription] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._open = False

    async def open(self) -> None:
        self._open = True

    async def close(self) -> None:
        self._open = False
        for sub in list(self._subs):
            await sub._leave(cancel=True)
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        self._groups.clear()
        self._routes.clear()
        self._waiting.clear()

    def _check_open(self) -> None:
        if not self._open:
            raise Unavailable("the in-process bus is not open")

    def _duplicate(self, msg_id: str) -> bool:
        now = self._clock()
        seen = self._seen
        horizon = now - self.dedupe_window
        while seen:
            oldest = next(iter(seen))
            if seen[oldest] > horizon:
                break
            del seen[oldest]
        if msg_id in seen:
            return True
        seen[msg_id] = now
        return False

    def _route(self, subject: str) -> list[_Group]:
        groups = self._routes.get(subject)
        if groups is None:
            check_subject(subject)
            groups = [g for g in self._groups.values() if matches(g.tokens, subject)]
            if len(self._routes) >= _ROUTE_CACHE_MAX:
                self._routes.clear()
            self._routes[subject] = groups
        return groups

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not self._open:
            self._check_open()
        if type(data) is not bytes or headers is not None or msg_id is not None:
            check_payload(data, headers, msg_id)
            data = bytes(data)
            if headers is not None:
                headers = dict(headers)
            if msg_id is not None and self._duplicate(msg_id):
                return
        groups = self._route(subject)
        if not groups:
            if len(self._waiting) >= RETAIN_UNROUTED:
                self._waiting.popleft()  # the oldest goes; the router's sweep republishes it
            self._waiting.append(_Message(subject, data, headers, msg_id))
            return
        for group in groups:
            group.mailbox.put(_Message(subject, data, headers, msg_id))

    async def subscribe(
        self,
        subject: str,
        group: str,
        handler: Handler,
        *,
        max_in_flight: int = 1,
        ack_wait: float = 30.0,
    ) -> Subscription:
        self._check_open()
        check_filter(subject)
        check_group(group)
        max_in_flight, ack_wait = check_options(max_in_flight, ack_wait)
        key = (subject, group)
        g = self._groups.get(key)
        if g is None:
            g = self._groups[key] = _Group(subject, group)
            self._routes.clear()
            if self._waiting:
                self._adopt_waiting(g)
        sub = _MemorySubscription(self, g, handler, max_in_flight, ack_wait)
        self._subs.add(sub)
        return sub

    def _adopt_waiting(self, g: _Group) -> None:
        keep: deque[_Message] = deque()
        for msg in self._waiting:
            if matches(g.tokens, msg.subject):
                g.mailbox.put(msg)
            else:
                keep.append(msg)
        self._waiting = keep

    async def remove_group(self, subject: str, group: str) -> None:
        g = self._groups.pop((subject, group), None)
        if g is not None:
            self._routes.clear()
            for member in list(g.members):
                await member.drain()

    def _requeue(self, group: _Group, msg: _Message, delay: float | None) -> None:
        if not delay or delay <= 0:
            group.mailbox.put(msg, front=True)
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._timers.discard(handle)
            group.mailbox.put(msg, front=True)

        handle = loop.call_later(delay, fire)
        self._timers.add(handle)


__all__ = ["MemoryBus"]
