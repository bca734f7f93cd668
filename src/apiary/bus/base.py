"""The bus contract: durable publish, queue-group subscribe, at-least-once delivery.

A backend subclasses :class:`Bus` and implements ``open``/``close``/``publish``/``subscribe``; the
shared machinery (the in-flight tracker, the worker pool, subject rules) lives beside this module
so that the in-process and the NATS JetStream backends behave identically — the contract suite in
``tests/bus`` runs unchanged against each of them.

Semantics every backend keeps:

* ``publish`` returns once the message is accepted durably (JetStream: after the PubAck). A
  ``msg_id`` seen again within the dedupe window is silently dropped — this is how a publisher
  that retries after a crash avoids duplicates.
* ``subscribe(subject, group, handler)``: every message on a matching subject goes to exactly one
  subscriber of ``group`` (load-balanced); each distinct group gets its own copy.
* A delivery is *outstanding* from the moment the handler gets it until it is settled with
  ``ack``/``nak``/``term`` — returning from the handler does not settle it, so a handler may hand
  the work on and ack later. At most ``max_in_flight`` deliveries are outstanding per
  subscription. One not settled within ``ack_wait`` (reset by ``in_progress``) is redelivered,
  possibly to another member. A handler that raises gets its delivery nak'ed with a short delay.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import NamedTuple

from apiary.bus.subjects import check_subject
from apiary.errors import FieldDetail, Invalid

DEDUPE_WINDOW = 120.0
"""Seconds within which a repeated ``msg_id`` is dropped (JetStream's duplicate window)."""

ERROR_DELAY = 0.1
"""Seconds before a delivery whose handler raised is redelivered."""

MAX_IN_FLIGHT = 65_536

_EMPTY: Mapping[str, str] = {}


class Delivery(ABC):
    """One delivery of one message to one handler; settle it exactly once.

    Settling twice is harmless (the second call does nothing), so error paths need no
    bookkeeping. ``num_delivered`` is 1 the first time and grows with every redelivery.
    """

    __slots__ = ("data", "headers", "msg_id", "num_delivered", "settled", "subject")

    def __init__(
        self,
        subject: str,
        data: bytes,
        headers: Mapping[str, str] | None,
        msg_id: str | None,
        num_delivered: int,
    ) -> None:
        self.subject = subject
        self.data = data
        self.headers: Mapping[str, str] = headers if headers is not None else _EMPTY
        self.msg_id = msg_id
        self.num_delivered = num_delivered
        self.settled = False

    @abstractmethod
    async def ack(self) -> None:
        """Done: never deliver this message to this group again."""

    @abstractmethod
    async def nak(self, delay: float | None = None) -> None:
        """Not done: redeliver (to any member of the group), after ``delay`` seconds if given."""

    @abstractmethod
    async def in_progress(self) -> None:
        """Still working: restart the ``ack_wait`` timer so long work is not redelivered."""

    @abstractmethod
    async def term(self) -> None:
        """Give up: never redeliver, not even to another member."""

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.subject} id={self.msg_id} "
            f"n={self.num_delivered} {len(self.data)}B>"
        )


Handler = Callable[[Delivery], Awaitable[None]]


class Subscription(ABC):
    """A member of a queue group; ``drain`` leaves the group gracefully."""

    subject: str
    group: str

    @abstractmethod
    async def drain(self) -> None:
        """Stop taking messages, wait for running handlers, hand unsettled ones back, leave."""


class Publish(NamedTuple):
    """One item for :meth:`Bus.publish_many`; plain ``(subject, data)`` tuples work too."""

    subject: str
    data: bytes
    msg_id: str | None = None
    headers: Mapping[str, str] | None = None


class Bus(ABC):
    """A message bus backend. Use as ``async with open_bus(url) as bus:``."""

    url: str

    ack_wait_cap: float | None = None
    """When set, every subscription's ``ack_wait`` is at most this (a bus option, e.g. NATS
    ``?ack_wait=3``): work held by a crashed process comes back that much sooner. A handler that
    marks long work ``in_progress`` must do so more often than the capped wait."""

    @abstractmethod
    async def open(self) -> None:
        """Connect / start; must be called (or ``async with``) before anything else."""

    @abstractmethod
    async def close(self) -> None:
        """Stop every subscription without waiting for handlers; unsettled messages go back."""

    @abstractmethod
    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish and return once the bus holds the message durably."""

    async def publish_many(self, items: Iterable[Publish | tuple[str, bytes]]) -> None:
        """Publish several messages; backends pipeline them (one round trip, not N).

        Every item is checked before any is sent, so bad input publishes nothing. The call
        returns once every message is held durably, or raises (the first failing item named);
        after such an error some may be stored already — retry the batch with the same
        ``msg_id`` s and the copies are dropped. Messages of one batch are stored, and so
        offered to each group, in the order given.
        """
        for p in self.checked(items):
            await self.publish(p.subject, p.data, msg_id=p.msg_id, headers=p.headers)

    def checked(self, items: Iterable[Publish | tuple[str, bytes]]) -> list[Publish]:
        """``items`` as :class:`Publish` tuples, every one checked (:meth:`check_publish`)."""
        batch = [item if isinstance(item, Publish) else Publish(*item) for item in items]
        for p in batch:
            self.check_publish(p)
        return batch

    def check_publish(self, item: Publish) -> None:
        """Raise :class:`~apiary.errors.Invalid`/``BadRequest`` for an item ``publish`` would
        refuse before sending anything (subject and payload rules)."""
        check_subject(item.subject)
        check_payload(item.data, item.headers, item.msg_id)

    @abstractmethod
    async def subscribe(
        self,
        subject: str,
        group: str,
        handler: Handler,
        *,
        max_in_flight: int = 1,
        ack_wait: float = 30.0,
    ) -> Subscription:
        """Join queue group ``group`` on ``subject`` (wildcards allowed); see the module doc."""

    @abstractmethod
    async def remove_group(self, subject: str, group: str) -> None:
        """Forget a queue group's durable state and pending messages (e.g. its hive was deleted).

        Members still subscribed are drained first. Subscribing again starts a fresh group.
        """

    async def __aenter__(self) -> Bus:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def check_options(max_in_flight: object, ack_wait: object) -> tuple[int, float]:
    """Validate subscribe options, naming the field at fault."""
    if (
        not isinstance(max_in_flight, int)
        or isinstance(max_in_flight, bool)
        or not 1 <= max_in_flight <= MAX_IN_FLIGHT
    ):
        why = f"must be an integer from 1 to {MAX_IN_FLIGHT}"
        detail = [FieldDetail("max_in_flight", why)]
        raise Invalid(f"max_in_flight {max_in_flight!r}: {why}", detail)
    if isinstance(ack_wait, bool) or not isinstance(ack_wait, int | float) or not ack_wait > 0:
        why = "must be a positive number of seconds"
        raise Invalid(f"ack_wait {ack_wait!r}: {why}", [FieldDetail("ack_wait", why)])
    return max_in_flight, float(ack_wait)


def check_payload(data: object, headers: object, msg_id: object) -> None:
    """Validate publish arguments, naming the field at fault."""
    if not isinstance(data, bytes | bytearray | memoryview):
        why = f"must be bytes, not {type(data).__name__}"
        raise Invalid(f"data {why}", [FieldDetail("data", why)])
    if msg_id is not None and (not isinstance(msg_id, str) or not msg_id):
        why = "must be a non-empty string or None"
        raise Invalid(f"msg_id {why}", [FieldDetail("msg_id", why)])
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise Invalid("headers must be a mapping", [FieldDetail("headers", "not a mapping")])
        for k, v in headers.items():
            if not isinstance(k, str) or not isinstance(v, str) or not k or ":" in k:
                why = "header names and values must be strings (names non-empty, no ':')"
                raise Invalid(f"headers[{k!r}]: {why}", [FieldDetail(f"headers.{k}", why)])
            if "\r" in v or "\n" in v:
                why = "header values may not contain line breaks"
                raise Invalid(f"headers[{k!r}]: {why}", [FieldDetail(f"headers.{k}", why)])


__all__ = [
    "DEDUPE_WINDOW",
    "ERROR_DELAY",
    "Bus",
    "Delivery",
    "Handler",
    "Publish",
    "Subscription",
    "check_options",
    "check_payload",
]
