"""The NATS JetStream bus: durable, shared by every replica and node of a scaled-out Apiary.

Layout: one stream (default ``APIARY``, subjects ``apiary.>``, file storage, limits retention with
a max age, a 2-minute duplicate window that makes ``msg_id`` dedupe work). Each (filter, group)
is one durable *pull* consumer named from the group (see ``consumer_name``); every subscriber of
that group — in this process or any other — pulls from the same consumer, which is what gives
queue-group semantics across machines and lets unacked work move to a surviving member.

Pulling is credit-based rather than ``fetch()`` in a loop: each subscription keeps pull requests
outstanding for exactly the slots it has free (``max_in_flight`` minus outstanding minus
buffered), messages arrive on a private inbox through one callback, and long-lived workers run
the handlers. There is no task and no round trip per message; acks are plain publishes.

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
from urllib.parse import parse_qs, urlsplit, urlunsplit

from apiary.bus.base import (
    DEDUPE_WINDOW,
    ERROR_DELAY,
    Bus,
    Delivery,
    Handler,
    Publish,
    Subscription,
    check_options,
    check_payload,
)
from apiary.bus.inflight import InFlight
from apiary.bus.mailbox import Mailbox
from apiary.bus.subjects import check_filter, check_group, check_subject, consumer_name
from apiary.bus.workers import WorkerPool
from apiary.errors import BadRequest, Conflict, FieldDetail, Invalid, Unavailable

log = logging.getLogger("apiary.bus.nats")

MSG_ID = "Nats-Msg-Id"
_ACK = b"+ACK"
_NAK = b"-NAK"
_WPI = b"+WPI"
_TERM = b"+TERM"
_STREAM_IN_USE = 10058

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


class _Options:
    """Bus options from the URL query, validated with the offending parameter named."""

    def __init__(self, url: str, overrides: Mapping[str, object]) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise Invalid(f"bus URL {url!r} has no host", [FieldDetail("bus", "missing host")])
        self.server = urlunsplit((parts.scheme, parts.netloc, "", "", ""))
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        query.update({k: str(v) for k, v in overrides.items() if v is not None})
        known = {
            "stream",
            "subjects",
            "max_age",
            "duplicate_window",
            "storage",
            "replicas",
            "max_ack_pending",
            "pull_expires",
            "publish_timeout",
        }
        for key in query:
            if key not in known:
                why = f"unknown option (known: {', '.join(sorted(known))})"
                raise Invalid(f"bus URL option {key!r}: {why}", [FieldDetail(f"bus.{key}", why)])
        self.stream = query.get("stream", "APIARY")
        if not self.stream or any(c in self.stream for c in ". *>\t"):
            why = "stream names may not be empty or contain '.', '*', '>' or whitespace"
            raise Invalid(f"bus stream {self.stream!r}: {why}", [FieldDetail("bus.stream", why)])
        self.subjects = [s.strip() for s in query.get("subjects", "apiary.>").split(",")]
        for s in self.subjects:
            check_filter(s)
        self.max_age = self._number(query, "max_age", 86_400.0)
        self.duplicate_window = self._number(query, "duplicate_window", DEDUPE_WINDOW)
        self.storage = query.get("storage", "file")
        if self.storage not in ("file", "memory"):
            why = "must be 'file' or 'memory'"
            raise Invalid(f"bus storage {self.storage!r}: {why}", [FieldDetail("bus.storage", why)])
        self.replicas = int(self._number(query, "replicas", 1))
        self.max_ack_pending = int(self._number(query, "max_ack_pending", 20_000))
        self.pull_expires = self._number(query, "pull_expires", 5.0)
        self.publish_timeout = self._number(query, "publish_timeout", 10.0)

    @staticmethod
    def _number(query: Mapping[str, str], key: str, default: float) -> float:
        raw = query.get(key)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            value = -1.0
        if not value > 0:
            why = "must be a positive number"
            raise Invalid(f"bus option {key}={raw!r}: {why}", [FieldDetail(f"bus.{key}", why)])
        return value


class _JSDelivery(Delivery):
    __slots__ = ("_reply", "_sub")

    def __init__(
        self,
        msg: Any,
        sub: _JSSubscription,
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
        await self._settle(_ACK)

    async def term(self) -> None:
        await self._settle(_TERM)

    async def nak(self, delay: float | None = None) -> None:
        if delay and delay > 0:
            await self._settle(_NAK + b' {"delay":%d}' % int(delay * 1e9))
        else:
            await self._settle(_NAK)

    async def in_progress(self) -> None:
        if not self.settled:
            self._sub.inflight.touch(self)
            await self._sub.bus._send(self._reply, _WPI)


class _JSSubscription(Subscription):
    def __init__(
        self,
        bus: JetStreamBus,
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
            await self.bus._send(msg.reply, _NAK)
        await self._pool.stop(cancel=cancel)
        self.inflight.stop_timer()
        for delivery in self.inflight.take_all():
            await delivery.nak()
        for msg, _ in self.mailbox.drain_items():
            await self.bus._send(msg.reply, _NAK)
        await self.bus._flush()
        self.bus._subs.discard(self)

    # ------------------------------------------------------------------ messages

    def _deliver(self, item: _Item) -> Delivery | None:
        msg, received = item
        if self._loop.time() - received > self.ack_wait:
            return None  # the server has redelivered it by now; don't run it twice here
        headers = msg.headers
        msg_id = headers.pop(MSG_ID, None) if headers else None
        delivery = _JSDelivery(msg, self, headers, msg_id)
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
            log.debug("pull %s: status %s %s", self.durable, status, description)
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
                log.warning("pull %s failed (%s); retrying", self.durable, exc)
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
        self.options = _Options(url, options)
        self.error_delay = error_delay
        self.name = name
        self._nc: Any = None
        self._js: Any = None
        self._subs: set[_JSSubscription] = set()
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
        try:
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
        log.info("bus reconnected to %s", self._nc.connected_url)
        for sub in list(self._subs):
            sub.reset_credit()

    async def _disconnected(self) -> None:
        if not self._closing:
            log.warning("bus disconnected from NATS; reconnecting")

    async def _error(self, exc: Exception) -> None:
        log.warning("NATS client error: %s", exc)

    async def _send(self, subject: str, body: bytes) -> None:
        """Fire-and-forget control message (ack/nak/...); a lost one means a redelivery."""
        try:
            await self._nc.publish(subject, body)
        except Exception as exc:
            log.warning("could not send %s to %s: %s", body[:5], subject, exc)

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

    async def _start_publish(
        self, subject: str, data: bytes, msg_id: str | None, headers: Mapping[str, str] | None
    ) -> asyncio.Future[Any]:
        check_subject(subject)
        check_payload(data, headers, msg_id)
        hdrs: dict[str, str] | None = dict(headers) if headers else None
        if msg_id is not None:
            hdrs = hdrs or {}
            hdrs[MSG_ID] = msg_id
        future: asyncio.Future[Any] = await self._js.publish_async(
            subject, bytes(data), headers=hdrs
        )
        return future

    async def _await_acks(self, futures: list[asyncio.Future[Any]], subjects: list[str]) -> None:
        from nats.js.errors import APIError, NoStreamResponseError

        try:
            async with asyncio.timeout(self.options.publish_timeout):
                results = await asyncio.gather(*futures, return_exceptions=True)
        except TimeoutError as exc:
            for f in futures:
                f.cancel()
            raise Unavailable(
                f"NATS did not acknowledge {len(futures)} publish(es) within "
                f"{self.options.publish_timeout}s; retry with the same msg_id"
            ) from exc
        for subject, result in zip(subjects, results, strict=True):
            if isinstance(result, NoStreamResponseError) or (
                isinstance(result, type) and issubclass(result, NoStreamResponseError)
            ):
                why = f"no JetStream stream stores it (stream {self.options.stream!r} covers "
                why += f"{', '.join(self.options.subjects)})"
                raise BadRequest(
                    f"cannot publish to {subject!r}: {why}", [FieldDetail("subject", why)]
                )
            if isinstance(result, APIError):
                raise Unavailable(
                    f"JetStream refused a publish to {subject!r}: {result.description}"
                )
            if isinstance(result, BaseException):
                raise Unavailable(f"publish to {subject!r} failed: {result}") from result

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        msg_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self._require_open()
        future = await self._start_publish(subject, data, msg_id, headers)
        await self._await_acks([future], [subject])

    async def publish_many(self, items: Iterable[Publish | tuple[str, bytes]]) -> None:
        """Send every message first, then wait for all PubAcks together: one round trip."""
        self._require_open()
        futures: list[asyncio.Future[Any]] = []
        subjects: list[str] = []
        try:
            for item in items:
                p = item if isinstance(item, Publish) else Publish(*item)
                futures.append(await self._start_publish(p.subject, p.data, p.msg_id, p.headers))
                subjects.append(p.subject)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        await self._await_acks(futures, subjects)

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
        sub = _JSSubscription(self, subject, group, handler, max_in_flight, ack_wait)
        await sub.start()
        self._subs.add(sub)
        return sub


__all__ = ["JetStreamBus"]
