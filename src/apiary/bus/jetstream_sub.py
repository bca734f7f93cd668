"""One member of a queue group on JetStream: credit-based pulls feeding long-lived workers.

Each subscription keeps pull requests outstanding for exactly the slots it has free
(``max_in_flight`` minus outstanding deliveries minus buffered messages minus credit already
requested), messages arrive on a private inbox through one callback, and the shared
:class:`WorkerPool` runs the handlers — no task and no round trip per message; acks are plain
publishes. Status messages (408 request expired, 409 consumer deleted / limits) return credit;
a watchdog forgets credit nobody answered (lost across a reconnect) so pulling never stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from apiary.bus.base import Delivery, Handler, Subscription
from apiary.bus.inflight import InFlight
from apiary.bus.mailbox import Mailbox
from apiary.bus.subjects import consumer_name
from apiary.bus.workers import WorkerPool

if TYPE_CHECKING:
    from apiary.bus.nats_options import NatsOptions


class JetStreamSide(Protocol):
    """What a subscription needs of its bus (:class:`~apiary.bus.jetstream.JetStreamBus`): the
    connection, its options and its control-message helpers — named here, so that this module
    does not import the bus that imports it."""

    options: NatsOptions
    error_delay: float
    _nc: Any
    _subs: set[JSSubscription]

    async def _send(self, subject: str, body: bytes) -> None: ...

    async def _flush(self) -> None: ...

    async def _ensure_consumer(
        self, subject: str, group: str, durable: str, ack_wait: float
    ) -> None: ...


log = logging.getLogger("apiary.bus.nats")

MSG_ID = "Nats-Msg-Id"
ACK = b"+ACK"
NAK = b"-NAK"
WPI = b"+WPI"
TERM = b"+TERM"

_Item = tuple[Any, float]  # (nats Msg, monotonic receive time)


def _num_delivered(reply: str) -> int:
    """Delivery count from a JetStream ack subject (v1 and v2 token layouts)."""
    tokens = reply.split(".")
    try:
        if len(tokens) == 9:
            return int(tokens[4])
        if len(tokens) >= 11:
            return int(tokens[6])
    except ValueError:
        pass
    return 1


class JSDelivery(Delivery):
    __slots__ = ("_reply", "_sub")

    def __init__(
        self,
        msg: Any,
        sub: JSSubscription,
        headers: Mapping[str, str] | None,
        msg_id: str | None,
    ) -> None:
        super().__init__(msg.subject, msg.data, headers, msg_id, _num_delivered(msg.reply))
        self._reply: str = msg.reply
        self._sub = sub

    async def _settle(self, verb: bytes) -> None:
        if self.settled:
            return
        self.settled = True
        self._sub.inflight.settle(self)
        await self._sub.bus._send(self._reply, verb)

    async def ack(self) -> None:
        await self._settle(ACK)

    async def term(self) -> None:
        await self._settle(TERM)

    async def nak(self, delay: float | None = None) -> None:
        if delay and delay > 0:
            await self._settle(NAK + b' {"delay":%d}' % int(delay * 1e9))
        else:
            await self._settle(NAK)

    async def in_progress(self) -> None:
        if not self.settled:
            self._sub.inflight.touch(self)
            await self._sub.bus._send(self._reply, WPI)


class JSSubscription(Subscription):
    def __init__(
        self,
        bus: JetStreamSide,
        subject: str,
        group: str,
        handler: Handler,
        max_in_flight: int,
        ack_wait: float,
    ) -> None:
        self.bus = bus
        self.subject = subject
        self.group = group
        self.durable = consumer_name(subject, group)
        self.ack_wait = ack_wait
        self._loop = asyncio.get_running_loop()
        self.inflight = InFlight(max_in_flight, ack_wait, self._expired, self._freed)
        self.mailbox: Mailbox[_Item] = Mailbox()
        self._pool: WorkerPool[_Item] = WorkerPool(
            name=f"{subject}/{group}",
            handler=handler,
            mailbox=self.mailbox,
            inflight=self.inflight,
            deliver=self._deliver,
            give_back=self._give_back,
            error_delay=bus.error_delay,
        )
        self._limit = max_in_flight
        self._threshold = max(1, (max_in_flight + 1) // 2)
        self._pending = 0
        self._last_heard = 0.0
        self._kick = asyncio.Event()
        self._recheck = False
        self._cooldown = False
        self._stopping = False
        self._inbox = ""
        self._nsub: Any = None
        self._puller: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        await self.bus._ensure_consumer(self.subject, self.group, self.durable, self.ack_wait)
        nc = self.bus._nc
        self._inbox = nc.new_inbox()
        self._nsub = await nc.subscribe(self._inbox, cb=self._on_msg)
        self._puller = asyncio.create_task(self._pull_loop(), name=f"bus-pull:{self.durable}")
        self._pool.start(self._limit)

    async def drain(self) -> None:
        await self._leave(cancel=False)

    async def _leave(self, *, cancel: bool) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._puller is not None:
            self._puller.cancel()
            await asyncio.gather(self._puller, return_exceptions=True)
        if self._nsub is not None:
            with contextlib.suppress(Exception):
                await self._nsub.unsubscribe()
        for msg, _ in self.mailbox.drain_items():
            await self.bus._send(msg.reply, NAK)
        await self._pool.stop(cancel=cancel)
        self.inflight.stop_timer()
        for delivery in self.inflight.take_all():
            await delivery.nak()
        for msg, _ in self.mailbox.drain_items():
            await self.bus._send(msg.reply, NAK)
        await self.bus._flush()
        self.bus._subs.discard(self)

    # ------------------------------------------------------------------ messages

    def _deliver(self, item: _Item) -> Delivery | None:
        msg, received = item
        if self._loop.time() - received > self.ack_wait:
            return None  # the server has redelivered it by now; don't run it twice here
        headers = msg.headers
        msg_id = headers.pop(MSG_ID, None) if headers else None
        delivery = JSDelivery(msg, self, headers, msg_id)
        self.inflight.add(delivery)
        return delivery

    def _give_back(self, item: _Item) -> None:
        self.mailbox.put(item, front=True)

    def _expired(self, delivery: Delivery) -> None:
        """JetStream redelivers on its own ack timer; locally only the slot is freed.

        A late ack is still sent (the server accepts it while the message is pending), so the
        delivery is not marked settled.
        """

    def _freed(self) -> None:
        if self._pending == 0 or self._room() >= self._threshold:
            self._kick.set()

    async def _on_msg(self, msg: Any) -> None:
        headers = msg.headers
        if not msg.reply or (headers and "Status" in headers):
            self._on_status(headers or {})
            return
        self._last_heard = self._loop.time()
        if self._pending > 0:
            self._pending -= 1
        self.mailbox.put((msg, self._last_heard))

    def _on_status(self, headers: Mapping[str, str]) -> None:
        self._last_heard = self._loop.time()
        status = headers.get("Status", "")
        if status == "100":
            return
        left = headers.get("Nats-Pending-Messages")
        if left is not None and left.isdigit():
            self._pending = max(0, self._pending - int(left))
        else:
            self._pending = 0
        description = headers.get("Description", "")
        if status == "409" and "deleted" in description.lower():
            self._recheck = True
        if status not in ("404", "408"):
            # 409 Exceeded MaxAckPending / MaxWaiting, 400, 503...: the server refused the pull;
            # asking again at once would spin, so the loop pauses briefly first.
            self._cooldown = True
            log.debug(
                "pull refused",
                extra={"durable": self.durable, "status": status, "description": description},
            )
        self._kick.set()

    # ------------------------------------------------------------------ pulling

    def _room(self) -> int:
        return self._limit - len(self.inflight) - len(self.mailbox) - self._pending

    def reset_credit(self) -> None:
        """After a reconnect outstanding pull requests are gone: forget them and pull afresh."""
        self._pending = 0
        self._recheck = True
        self._kick.set()

    async def _pull_loop(self) -> None:
        bus = self.bus
        expires = bus.options.pull_expires
        request_subject = f"$JS.API.CONSUMER.MSG.NEXT.{bus.options.stream}.{self.durable}"
        failures = 0
        while not self._stopping:
            try:
                if self._cooldown:
                    self._cooldown = False
                    await asyncio.sleep(0.25)
                if self._recheck:
                    self._recheck = False
                    await bus._ensure_consumer(
                        self.subject, self.group, self.durable, self.ack_wait
                    )
                want = self._room()
                if want > 0 and (self._pending == 0 or want >= self._threshold):
                    body = b'{"batch":%d,"expires":%d}' % (want, int(expires * 1e9))
                    await bus._nc.publish(request_subject, body, reply=self._inbox)
                    if self._pending == 0:
                        self._last_heard = self._loop.time()
                    self._pending += want
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                self._recheck = True
                log.warning(
                    "pull failed; retrying", extra={"durable": self.durable, "error": str(exc)}
                )
                await asyncio.sleep(min(0.1 * 2**failures, 5.0))
                continue
            self._kick.clear()
            wait = expires + 2.0
            if self._pending > 0:
                wait = max(0.05, self._last_heard + expires + 2.0 - self._loop.time())
            try:
                async with asyncio.timeout(wait):
                    await self._kick.wait()
            except TimeoutError:
                if self._pending > 0 and self._loop.time() - self._last_heard > expires + 2.0:
                    self._pending = 0  # requests lost (e.g. across a reconnect): pull again


__all__ = ["JSDelivery", "JSSubscription"]
