"""The NATS JetStream bus: durable, shared by every replica and node of a scaled-out Apiary.

Layout: one stream (default ``APIARY``, subjects ``apiary.>``, file storage, limits retention with
a max age, a 2-minute duplicate window that makes ``msg_id`` dedupe work). Each (filter, group)
is one durable *pull* consumer named from the group (see ``consumer_name``); every subscriber of
that group — in this process or any other — pulls from the same consumer, which is what gives
queue-group semantics across machines and lets unacked work move to a surviving member.

Pulling is credit-based rather than ``fetch()`` in a loop (see ``jetstream_sub``); publishing
pipelines: ``publish_many`` sends every message, then waits once for all their PubAcks, which
are collected per batch on one inbox subscription (see ``jetstream_pub``).

Reconnects: nats-py reconnects and resubscribes by itself; on ``reconnected`` every subscription
forgets its outstanding pull credit, re-checks its consumer and pulls again, and a watchdog resets
credit that went unanswered past its expiry, so pull loops survive a server restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from apiary.bus.base import (
    ERROR_DELAY,
    Bus,
    Handler,
    Publish,
    Subscription,
    check_options,
    check_payload,
)
from apiary.bus.jetstream_pub import Item, PubAcks
from apiary.bus.jetstream_sub import MSG_ID, JSSubscription
from apiary.bus.nats_options import NatsOptions
from apiary.bus.subjects import check_filter, check_group, check_subject, consumer_name
from apiary.errors import Conflict, FieldDetail, Unavailable

log = logging.getLogger("apiary.bus.nats")

_STREAM_IN_USE = 10058


class JetStreamBus(Bus):
    """``nats://host:4222?stream=APIARY&subjects=apiary.>`` — see :func:`apiary.bus.open_bus`."""

    def __init__(
        self,
        url: str = "nats://127.0.0.1:4222",
        *,
        error_delay: float = ERROR_DELAY,
        name: str = "apiary-bus",
        **options: object,
    ) -> None:
        self.url = url
        self.options = NatsOptions(url, options)
        self.ack_wait_cap = self.options.ack_wait
        self.error_delay = error_delay
        self.name = name
        self._nc: Any = None
        self._js: Any = None
        self._acks: PubAcks = None  # type: ignore[assignment]  # set by open()
        self._subs: set[JSSubscription] = set()
        self._closing = False

    # ------------------------------------------------------------------ connection

    async def open(self) -> None:
        import nats
        import nats.errors

        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    servers=[self.options.server],
                    name=self.name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=3,
                    reconnected_cb=self._reconnected,
                    disconnected_cb=self._disconnected,
                    error_cb=self._error,
                ),
                timeout=10,
            )
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(f"cannot connect to NATS at {self.options.server}: {exc}") from exc
        self._js = self._nc.jetstream(timeout=self.options.publish_timeout)
        self._acks = PubAcks(self._nc, self.options.publish_timeout, self._no_stream)
        try:
            await self._acks.start()
            await self._ensure_stream()
        except BaseException:
            await self._nc.close()
            raise

    async def close(self) -> None:
        self._closing = True
        for sub in list(self._subs):
            await sub._leave(cancel=True)
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                await self._nc.close()

    async def _reconnected(self) -> None:
        log.info("bus reconnected", extra={"server": self._nc.connected_url})
        for sub in list(self._subs):
            sub.reset_credit()

    async def _disconnected(self) -> None:
        if not self._closing:
            log.warning("bus disconnected from NATS; reconnecting")

    async def _error(self, exc: Exception) -> None:
        log.warning("NATS client error", extra={"error": str(exc)})

    async def _send(self, subject: str, body: bytes) -> None:
        """Fire-and-forget control message (ack/nak/...); a lost one means a redelivery."""
        try:
            await self._nc.publish(subject, body)
        except Exception as exc:
            log.warning(
                "could not send a control message",
                extra={"control": body[:5].decode(errors="replace"), "subject": subject,
                       "error": str(exc)},
            )  # fmt: skip

    async def _flush(self) -> None:
        with contextlib.suppress(Exception):
            await self._nc.flush(timeout=2)

    # ------------------------------------------------------------------ stream & consumers

    async def _ensure_stream(self) -> None:
        from nats.js.api import RetentionPolicy, StorageType, StreamConfig
        from nats.js.errors import APIError, BadRequestError

        o = self.options
        config = StreamConfig(
            name=o.stream,
            subjects=o.subjects,
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE if o.storage == "file" else StorageType.MEMORY,
            max_age=o.max_age,
            duplicate_window=o.duplicate_window,
            num_replicas=o.replicas,
        )
        try:
            try:
                await self._js.add_stream(config)
            except BadRequestError as exc:
                if exc.err_code != _STREAM_IN_USE:
                    raise
                await self._js.update_stream(config)
        except APIError as exc:
            raise Conflict(f"JetStream stream {o.stream!r}: {exc.description}") from exc
        except TimeoutError as exc:
            raise Unavailable(f"JetStream did not answer at {o.server} (is -js on?)") from exc

    async def _ensure_consumer(
        self, subject: str, group: str, durable: str, ack_wait: float
    ) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
        from nats.js.errors import APIError

        config = ConsumerConfig(
            durable_name=durable,
            description=f"apiary group {group!r} on {subject}",
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_deliver=-1,
            filter_subject=subject,
            max_ack_pending=self.options.max_ack_pending,
        )
        try:
            await self._js.add_consumer(self.options.stream, config)
        except APIError as exc:
            raise Conflict(
                f"JetStream consumer {durable!r} for group {group!r}: {exc.description}",
                [FieldDetail("group", str(exc.description))],
            ) from exc
        except TimeoutError as exc:
            raise Unavailable(f"JetStream did not answer creating consumer {durable!r}") from exc

    async def remove_group(self, subject: str, group: str) -> None:
        from nats.js.errors import NotFoundError

        durable = consumer_name(subject, group)
        for sub in [s for s in self._subs if s.durable == durable]:
            await sub.drain()
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(self.options.stream, durable)

    async def delete_stream(self) -> None:
        """Delete the whole stream (tests, ``apiaryd reset``): every message and consumer."""
        from nats.js.errors import NotFoundError

        with contextlib.suppress(NotFoundError):
            await self._js.delete_stream(self.options.stream)

    # ------------------------------------------------------------------ publish

    def _require_open(self) -> Any:
        if self._nc is None or self._nc.is_closed:
            raise Unavailable("the NATS bus is not open")
        return self._js

    def _item(self, item: Publish | tuple[str, bytes]) -> Item:
        p = item if isinstance(item, Publish) else Publish(*item)
        check_subject(p.subject)
        check_payload(p.data, p.headers, p.msg_id)
        hdrs: dict[str, str] | None = dict(p.headers) if p.headers else None
        if p.msg_id is not None:
            hdrs = hdrs or {}
            hdrs[MSG_ID] = p.msg_id
        return p.subject, bytes(p.data), hdrs

    def _no_stream(self) -> str:
        return (
            f"no JetStream stream stores it (stream {self.options.stream!r} covers "
            f"{', '.join(self.options.subjects)})"
        )

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._require_open()
        await self._acks.publish([self._item(Publish(subject, data, msg_id, headers))])

    async def publish_many(self, items: Iterable[Publish | tuple[str, bytes]]) -> None:
        """Check every item, send them all, then wait once for all their PubAcks."""
        self._require_open()
        await self._acks.publish([self._item(item) for item in items])

    # ------------------------------------------------------------------ subscribe

    async def subscribe(
        self,
        subject: str,
        group: str,
        handler: Handler,
        *,
        max_in_flight: int = 1,
        ack_wait: float = 30.0,
    ) -> Subscription:
        self._require_open()
        check_filter(subject)
        check_group(group)
        max_in_flight, ack_wait = check_options(max_in_flight, ack_wait)
        if self.ack_wait_cap is not None:
            ack_wait = min(ack_wait, self.ack_wait_cap)
        sub = JSSubscription(self, subject, group, handler, max_in_flight, ack_wait)
        await sub.start()
        self._subs.add(sub)
        return sub


__all__ = ["JetStreamBus"]
