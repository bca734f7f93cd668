"""JetStream publishes pipelined on one connection, their PubAcks collected per batch.

nats-py's ``publish_async`` costs, per message, a semaphore behind ``wait_for``, a NUID plus
random token, a future with a done-callback, and a JSON decode into a ``PubAck`` dataclass; the
bus then gathered those futures under an ``asyncio.timeout``. On the message path (the router's
dispatches, every drone's outcomes) that was a tenth of the process's time. Here a batch is one
future, one timer and one counter: each message is a plain core publish whose reply subject is
``<inbox>.<n>`` on one wildcard subscription, and each PubAck that comes back counts the batch
down (an ack with no ``"error"`` needs no decoding). The batch's future resolves when the last
ack is in, or fails at the first timeout — one wait per batch, whatever its size.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

import nats.errors

from apiary.errors import BadRequest, FieldDetail, Unavailable

Item = tuple[str, bytes, "dict[str, str] | None"]
"""(subject, data, headers with ``Nats-Msg-Id`` already in) — checked by the caller."""


class _Batch:
    __slots__ = ("failures", "future", "left")

    def __init__(self, future: asyncio.Future[None], size: int) -> None:
        self.future = future
        self.left = size
        self.failures: dict[int, str] | None = None


class PubAcks:
    """The PubAck side of one NATS connection's JetStream publishes.

    ``no_stream`` builds the reason given when no stream stores a subject (the server answers
    "no responders"); ``timeout`` is how long a batch may wait for its acks.
    """

    def __init__(self, nc: Any, timeout: float, no_stream: Callable[[], str]) -> None:
        self._nc = nc
        self.timeout = timeout
        self._no_stream = no_stream
        self._prefix = f"{nc.new_inbox()}."
        self._cut = len(self._prefix)
        self._next = 0
        self._waiting: dict[str, tuple[_Batch, int]] = {}
        self._sub: Any = None

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._prefix}*", cb=self._on_ack)

    def __len__(self) -> int:
        """PubAcks still awaited."""
        return len(self._waiting)

    async def publish(self, items: Sequence[Item]) -> None:
        """Send every item, then wait once for all their PubAcks; raise if any is missing or
        refused (naming the first such item in order). Nothing is retried here: the caller
        retries with the same ``Nats-Msg-Id`` and the stream drops the copies it has."""
        if not items:
            return
        loop = asyncio.get_running_loop()
        batch = _Batch(loop.create_future(), len(items))
        waiting = self._waiting
        tokens: list[str] = []
        publish = self._nc.publish
        prefix = self._prefix
        try:
            for i, (subject, data, headers) in enumerate(items):
                self._next += 1
                token = str(self._next)
                waiting[token] = (batch, i)
                tokens.append(token)
                try:
                    await publish(subject, data, reply=prefix + token, headers=headers)
                except (OSError, nats.errors.Error) as exc:
                    raise Unavailable(f"publish to {subject!r} failed: {exc}") from exc
            if batch.left > 0:
                timer = loop.call_later(self.timeout, _expire, batch.future)
                try:
                    await batch.future
                finally:
                    timer.cancel()
        except TimeoutError as exc:
            raise Unavailable(
                f"NATS did not acknowledge {batch.left} of {len(items)} publish(es) within "
                f"{self.timeout}s; retry with the same msg_id"
            ) from exc
        finally:
            for token in tokens:
                waiting.pop(token, None)
        if batch.failures:
            first = min(batch.failures)
            subject, why = items[first][0], batch.failures[first]
            if why is _NO_STREAM:
                why = self._no_stream()
                raise BadRequest(
                    f"cannot publish to {subject!r}: {why}", [FieldDetail("subject", why)]
                )
            raise Unavailable(f"JetStream refused a publish to {subject!r}: {why}")

    async def _on_ack(self, msg: Any) -> None:
        entry = self._waiting.pop(msg.subject[self._cut :], None)
        if entry is None:
            return  # its batch timed out or was cancelled
        batch, index = entry
        data: bytes = msg.data
        why: str | None = None
        headers = msg.headers
        if headers and headers.get("Status") == "503":
            why = _NO_STREAM
        elif b'"error"' in data:
            why = _describe(data)
        if why is not None:
            if batch.failures is None:
                batch.failures = {}
            batch.failures[index] = why
        batch.left -= 1
        if batch.left == 0 and not batch.future.done():
            batch.future.set_result(None)


_NO_STREAM = "no stream"


def _describe(data: bytes) -> str:
    try:
        error = json.loads(data).get("error") or {}
        return str(error.get("description") or error)
    except (ValueError, AttributeError):
        return data[:200].decode(errors="replace")


def _expire(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


__all__ = ["Item", "PubAcks"]
