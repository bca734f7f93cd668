"""Webhook delivery: one signed JSON POST per notice, retried with backoff, never for ever.

A hive's ``spec.webhook`` names a URL the operators own; it may be slow, down, or (as in the seed
manifests, on a machine without internet) unresolvable. So delivery is bounded everywhere: a
timeout per attempt, a cap on attempts, delays that grow exponentially, one lane (queue) per URL
with a cap on its length, and a URL that just exhausted its attempts is treated as *down* for a
while (a circuit breaker) — its notices fail at once, without a request and without a warning,
until one probe gets through. A dead endpoint costs one warning and one retry sequence, not
minutes of retries per notice and a screen of logs. The :class:`~apiary.server.notify.Notifier`
decides what to send; this module only knows how to send it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import orjson

from apiary.logging import get_logger

log = get_logger("apiary.webhooks")

Sleep = Callable[[float], Awaitable[None]]
Result = Literal["delivered", "rejected", "undeliverable"]
"""How a delivery ended: the receiver took it (2xx), refused it for good (a 4xx other than
408/429: retrying cannot help), or every attempt failed (network errors, timeouts, 5xx)."""

SIGNATURE_HEADER = "X-Apiary-Signature"
EVENT_HEADER = "X-Apiary-Event"
DELIVERY_HEADER = "X-Apiary-Delivery"
RETRIED_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True)
class WebhookTarget:
    """A hive's webhook, resolved: the secret is the HMAC key's bytes (None: unsigned)."""

    url: str
    events: frozenset[str] | None = None
    """Subscribed events; None means all of them."""
    secret: bytes | None = None
    timeout: float = 5.0

    def wants(self, event: str) -> bool:
        return self.events is None or event in self.events


@dataclass(frozen=True)
class Notice:
    """What a hive is told; ``id`` is the delivery id, the same on every retry so receivers
    can drop duplicates."""

    event: str
    time: str
    cell: str
    hive: str
    session: str | None
    detail: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def body(self) -> bytes:
        doc = {
            "event": self.event,
            "time": self.time,
            "cell": self.cell,
            "hive": self.hive,
            "session": self.session,
            "detail": self.detail,
        }
        return orjson.dumps(doc, default=str)


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Apiary-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does (here for tests and docs): constant-time signature check."""
    return header is not None and hmac.compare_digest(sign(secret, body), header)


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    initial_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 30.0
    down_for: float = 30.0
    """After a URL exhausted its attempts it is *down* (a circuit breaker): for this long its
    notices fail at once without a request; then one notice probes it with a single attempt —
    success closes the circuit, failure keeps it open for another ``down_for``."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        return float(min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1)))


class WebhookSender:
    """Sends notices over one pooled HTTP client, in order per URL: each URL has a lane (a
    bounded queue and one task that lives while the queue has work), so a receiver sees its
    notices in the order they happened, a dead URL ties up one connection, not dozens, and a
    slow one backs up only its own lane — when that is full, its notices are dropped and
    counted. ``sleep`` and ``clock`` are injectable so tests exercise the backoff without
    waiting for it."""

    def __init__(
        self,
        retry: RetrySettings | None = None,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        lane_size: int = 256,
        on_attempt: Callable[[str], None] | None = None,
    ) -> None:
        self.retry = retry or RetrySettings()
        self.sleep = sleep
        self.clock = clock
        self.lane_size = lane_size
        self.on_attempt = on_attempt
        """Called (for metrics) with ``retried`` after each failed attempt that will be retried,
        then once with how the delivery ended (``delivered``/``rejected``/``undeliverable``), or
        with ``dropped`` when the URL's lane is full."""
        self._down_until: dict[str, float] = {}
        self._lanes: dict[str, tuple[deque[tuple[WebhookTarget, Notice]], asyncio.Task[None]]] = {}
        self._client: httpx.AsyncClient | None = None

    def submit(self, target: WebhookTarget, notice: Notice) -> bool:
        """Queue a delivery on the URL's lane without waiting; False when the lane is full."""
        lane = self._lanes.get(target.url)
        if lane is None:
            work: deque[tuple[WebhookTarget, Notice]] = deque()
            task = asyncio.get_running_loop().create_task(self._run_lane(target.url, work))
            lane = self._lanes[target.url] = (work, task)
        if len(lane[0]) >= self.lane_size:
            self._count("dropped")
            return False
        lane[0].append((target, notice))
        return True

    async def _run_lane(self, url: str, work: deque[tuple[WebhookTarget, Notice]]) -> None:
        try:
            while work:
                target, notice = work.popleft()
                try:
                    await self.deliver(target, notice)
                except Exception:  # a bug here must not stall the lane for good
                    log.exception("webhook delivery failed", url=url, notice=notice.event)
        finally:  # no await since the last check of ``work``: nothing queued is left behind
            lane = self._lanes.get(url)
            if lane is not None and lane[0] is work:
                del self._lanes[url]

    async def drain(self) -> None:
        """Wait until every lane is empty (tests, shutdown)."""
        while self._lanes:
            tasks = [task for _, task in self._lanes.values()]
            await asyncio.gather(*tasks, return_exceptions=True)

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                follow_redirects=False,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
                headers={"User-Agent": "apiary-webhooks/1", "Content-Type": "application/json"},
            )
        return self._client

    async def aclose(self) -> None:
        """Cancel the lanes (what they still hold is lost: notices are best effort) and close
        the HTTP client."""
        tasks = [task for _, task in self._lanes.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._lanes.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def is_down(self, url: str) -> bool:
        """True while the URL's circuit is open (notices fail without a request)."""
        until = self._down_until.get(url)
        return until is not None and self.clock() < until

    async def deliver(self, target: WebhookTarget, notice: Notice) -> Result:
        """POST the notice until it is taken, refused, or out of attempts."""
        url = target.url
        probing = url in self._down_until
        if probing and self.is_down(url):
            self._count("undeliverable")
            log.debug("webhook down: notice not sent", url=url, delivery=notice.id)
            return "undeliverable"
        body = notice.body()
        headers = {EVENT_HEADER: notice.event, DELIVERY_HEADER: notice.id}
        if target.secret is not None:
            headers[SIGNATURE_HEADER] = sign(target.secret, body)
        attempts = 1 if probing else max(1, self.retry.max_attempts)
        problem = ""
        for attempt in range(1, attempts + 1):
            problem = await self._attempt(target, body, headers)
            if problem == "":
                if probing:
                    log.info("webhook reachable again", url=url)
                self._down_until.pop(url, None)
                self._count("delivered")
                return "delivered"
            if problem.startswith("rejected"):
                self._down_until.pop(url, None)  # it answers: not down
                self._count("rejected")
                log.warning("webhook refused the notice", url=url, notice=notice.event,
                            delivery=notice.id, response=problem)  # fmt: skip
                return "rejected"
            if attempt < attempts:
                self._count("retried")
                await self.sleep(self.retry.delay(attempt))
        self._count("undeliverable")
        self._down_until[url] = self.clock() + self.retry.down_for
        report = log.debug if probing else log.warning
        report("webhook undeliverable; its notices are not sent for a while", url=url,
               notice=notice.event, delivery=notice.id, attempts=attempts, error=problem,
               down_for=self.retry.down_for)  # fmt: skip
        return "undeliverable"

    async def _attempt(self, target: WebhookTarget, body: bytes, headers: dict[str, str]) -> str:
        """'' when delivered; ``rejected: ...`` for a final refusal; else why it may be retried."""
        try:
            response = await self._http().post(
                target.url, content=body, headers=headers, timeout=target.timeout
            )
        except httpx.TimeoutException:
            return f"no answer within {target.timeout:g}s"
        except (httpx.HTTPError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        code = response.status_code
        if 200 <= code < 300:
            return ""
        if code >= 500 or code in RETRIED_STATUSES:
            return f"HTTP {code}"
        return f"rejected: HTTP {code}"

    def _count(self, result: str) -> None:
        if self.on_attempt is not None:
            self.on_attempt(result)
