"""The client of a bus served over a socket (``fd://N``): the node's bus in ``--node-process``.

apiaryd starts its node as a child process and passes it one end of a socket pair as descriptor
``N``; this backend speaks :mod:`apiary.bus.wire` on it to :class:`~apiary.bus.serve.BusServer`,
which calls apiaryd's own bus. Publishing waits for the server's answer (the contract: the call
returns once the bus holds the message); acks and the rest are one-way, like JetStream's.

The handler side is the in-process bus's: a :class:`~apiary.bus.workers.WorkerPool` per
subscription, fed by the frames the server sends. The server tracks what is outstanding and
redelivers after ``ack_wait``; the copy kept here only mirrors it, so ``max_in_flight`` holds on
both sides and a delivery that expired here is forgotten on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
from collections.abc import Iterable, Mapping
from typing import Any

from apiary import errors
from apiary.bus.base import (
    ERROR_DELAY,
    Bus,
    Delivery,
    Handler,
    Publish,
    Subscription,
    check_options,
)
from apiary.bus.inflight import InFlight
from apiary.bus.mailbox import Mailbox
from apiary.bus.subjects import check_filter, check_group
from apiary.bus.wire import Outbox, WireError, read_frame
from apiary.bus.workers import WorkerPool
from apiary.errors import BadRequest, FieldDetail, Unavailable

log = logging.getLogger("apiary.bus")

_Item = tuple[int, str, bytes, "Mapping[str, str] | None", "str | None", int]
"""(delivery number, subject, data, headers, msg_id, num_delivered) as the server sent it."""


class _RemoteDelivery(Delivery):
    __slots__ = ("_did", "_sub")

    def __init__(self, item: _Item, sub: _RemoteSubscription) -> None:
        did, subject, data, headers, msg_id, num = item
        super().__init__(subject, data, headers, msg_id, num)
        self._did = did
        self._sub = sub

    def _settle(self, head: list[Any]) -> None:
        if not self.settled:
            self.settled = True
            self._sub.inflight.settle(self)
            self._sub.bus._send(head)

    async def ack(self) -> None:
        self._settle(["a", self._did])

    async def term(self) -> None:
        self._settle(["t", self._did])

    async def nak(self, delay: float | None = None) -> None:
        self._settle(["n", self._did, delay])

    async def in_progress(self) -> None:
        if not self.settled and self._sub.inflight.touch(self):
            self._sub.bus._send(["w", self._did])


class _RemoteSubscription(Subscription):
    def __init__(
        self, bus: RemoteBus, sid: int, subject: str, group: str, handler: Handler,
        max_in_flight: int, ack_wait: float,
    ) -> None:  # fmt: skip
        self.bus = bus
        self.sid = sid
        self.subject = subject
        self.group = group
        self.mailbox: Mailbox[_Item] = Mailbox()
        self.inflight = InFlight(max_in_flight, ack_wait, self._expired)
        self._pool: WorkerPool[_Item] = WorkerPool(
            name=f"{subject}/{group}",
            handler=handler,
            mailbox=self.mailbox,
            inflight=self.inflight,
            deliver=self._deliver,
            give_back=self._give_back,
            error_delay=bus.error_delay,
        )
        self._pool.start(max_in_flight)
        self.left = False

    def _deliver(self, item: _Item) -> Delivery:
        delivery = _RemoteDelivery(item, self)
        self.inflight.add(delivery)
        return delivery

    def _give_back(self, item: _Item) -> None:
        """A stopping worker's item: unsettled, so the server's drain hands it back."""

    def _expired(self, delivery: Delivery) -> None:
        assert isinstance(delivery, _RemoteDelivery)
        delivery.settled = True  # the server's copy expired too and is being redelivered
        self.bus._send(["f", delivery._did])

    async def drain(self) -> None:
        await self._leave(cancel=False)

    async def _leave(self, *, cancel: bool) -> None:
        if self.left:
            return
        self.left = True
        await self._pool.stop(cancel=cancel)
        self.inflight.stop_timer()
        for delivery in self.inflight.take_all():
            delivery.settled = True
        self.bus._subs.pop(self.sid, None)
        if not cancel:  # the server hands back what is unsettled and leaves the group
            with contextlib.suppress(Unavailable):
                await self.bus._call(["x", 0, self.sid])


class RemoteBus(Bus):
    """A bus on the other end of a connected socket, given as ``fd://N`` (a descriptor)."""

    def __init__(self, url: str, *, error_delay: float = ERROR_DELAY) -> None:
        self.url = url
        self.error_delay = error_delay
        number = url.partition("://")[2]
        if not number.isdigit():
            why = "must be fd://N, N the number of a connected socket descriptor"
            raise BadRequest(f"bus URL {url!r}: {why}", [FieldDetail("bus", why)])
        self._fd = int(number)
        self._out: Outbox | None = None
        self._reader: asyncio.Task[None] | None = None
        self._calls: dict[int, asyncio.Future[None]] = {}
        self._seqs = itertools.count(1)
        self._sids = itertools.count(1)
        self._subs: dict[int, _RemoteSubscription] = {}
        self.lost = asyncio.Event()
        """Set when the connection to the serving process ends (it exited, or closed it)."""

    async def open(self) -> None:
        try:
            sock = socket.socket(fileno=self._fd)
        except OSError as exc:
            why = f"descriptor {self._fd} is not a socket: {exc}"
            raise Unavailable(f"bus {self.url}: {why}") from None
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        self._out = Outbox(writer)
        self._reader = asyncio.create_task(self._read(reader), name=f"bus-reader:{self.url}")

    async def close(self) -> None:
        for sub in list(self._subs.values()):
            await sub._leave(cancel=True)
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._out is not None:
            await self._out.close()
        self._fail_calls("the bus client is closed")

    # ------------------------------------------------------------------------------- calls

    def _send(self, head: list[Any], body: bytes = b"") -> None:
        if self._out is not None:
            self._out.send(head, body)

    async def _call(self, head: list[Any], body: bytes = b"") -> None:
        if self._out is None or self._out.closed or self.lost.is_set():
            raise Unavailable(f"bus {self.url} is not connected")
        seq = head[1] = next(self._seqs)
        fut = self._calls[seq] = asyncio.get_running_loop().create_future()
        self._out.send(head, body)
        await fut

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while (got := await read_frame(reader)) is not None:
                head, body = got
                if head[0] == "d":
                    _, sid, did, subject, msg_id, headers, num = head
                    sub = self._subs.get(sid)
                    if sub is not None and not sub.left:  # else the server's drain has it
                        sub.mailbox.put((did, subject, body, headers, msg_id, num))
                else:
                    self._answer(head)
        except (WireError, ConnectionError, OSError) as exc:
            log.warning("bus connection broken", extra={"bus": self.url, "error": str(exc)})
        except (IndexError, TypeError, ValueError) as exc:  # a head of the wrong shape
            why = {"bus": self.url, "error": repr(exc)}
            log.warning("bus server sent a malformed frame", extra=why)
        finally:
            self.lost.set()
            self._fail_calls(f"bus {self.url}: the serving process closed the connection")

    def _answer(self, head: list[Any]) -> None:
        fut = self._calls.pop(head[1], None)
        if fut is None or fut.done():
            return
        if head[0] == "ok":
            fut.set_result(None)
            return
        _, _, kind, message, details = head
        cls = getattr(errors, kind, None)
        if not (isinstance(cls, type) and issubclass(cls, errors.ApiaryError)):
            cls = Unavailable
        fut.set_exception(cls(message, [FieldDetail(f, m) for f, m in details]))

    def _fail_calls(self, why: str) -> None:
        calls, self._calls = self._calls, {}
        for fut in calls.values():
            if not fut.done():
                fut.set_exception(Unavailable(why))

    # ------------------------------------------------------------------------------ the Bus

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        await self.publish_many([Publish(subject, data, msg_id, headers)])

    async def publish_many(self, items: Iterable[Publish | tuple[str, bytes]]) -> None:
        batch = self.checked(items)
        if not batch:
            return
        heads = [[p.subject, p.msg_id, dict(p.headers) if p.headers else None, len(p.data)]
                 for p in batch]  # fmt: skip
        await self._call(["p", 0, heads], b"".join(bytes(p.data) for p in batch))

    async def subscribe(
        self,
        subject: str,
        group: str,
        handler: Handler,
        *,
        max_in_flight: int = 1,
        ack_wait: float = 30.0,
    ) -> Subscription:
        check_filter(subject)
        check_group(group)
        max_in_flight, ack_wait = check_options(max_in_flight, ack_wait)
        sid = next(self._sids)
        sub = _RemoteSubscription(self, sid, subject, group, handler, max_in_flight, ack_wait)
        self._subs[sid] = sub
        try:
            await self._call(["s", 0, sid, subject, group, max_in_flight, ack_wait])
        except BaseException:
            await sub._leave(cancel=True)
            raise
        return sub

    async def remove_group(self, subject: str, group: str) -> None:
        for sub in [s for s in self._subs.values() if (s.subject, s.group) == (subject, group)]:
            await sub.drain()
        await self._call(["g", 0, subject, group])


__all__ = ["RemoteBus"]
