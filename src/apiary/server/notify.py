"""The notifier: what the router announces becomes metrics, Events and webhooks.

The router awaits ``on_notice(session, event, detail)`` right after a commit, on the path of
every message, so the hook only bumps counters and puts the notice on a bounded queue — no store
read, no network, no waiting (a full queue drops the notice and counts it). One worker task takes
notices off the queue: violations (``timeout``, ``guardrail_violation``, ``dead_letter``, and
from nodes ``circuit_open``/``crash_loop``) become Warning Events on the Session and the Hive,
deduplicated by :class:`~apiary.api.events.EventRecorder`; a hive with ``spec.webhook``
subscribed to the event gets a signed POST, queued on its URL's lane in
:class:`~apiary.server.webhooks.WebhookSender`, so a slow receiver delays neither Events nor other
hives' webhooks (its own lane fills and drops instead).

A hive's webhook (and its HMAC secret) is read from the store at most once per ``ttl`` seconds.
See docs/notifications.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from apiary.api.events import EventRecorder
from apiary.errors import ApiaryError, NotFound
from apiary.logging import get_logger
from apiary.router import SessionInfo
from apiary.server.notify_metrics import NotifyMetrics
from apiary.server.webhooks import Notice, WebhookSender, WebhookTarget
from apiary.store import Store

log = get_logger("apiary.notify")

Obj = dict[str, Any]

WARNING_EVENTS = frozenset({"timeout", "guardrail_violation", "dead_letter", "circuit_open",
                            "crash_loop"})  # fmt: skip
"""Notices that are also Warning Events on the Session and the Hive."""
VIOLATION_EVENTS = frozenset({"timeout", "guardrail_violation", "circuit_open"})
"""Notices counted in ``apiary_guardrail_violations_total`` (one per failed attempt)."""
DEFAULT_REASONS = {
    "timeout": "ResponseTimeout",
    "circuit_open": "CircuitOpen",
    "crash_loop": "CrashLoopBackOff",
    "guardrail_violation": "GuardrailViolation",
}
MAX_EVENT_MESSAGE = 1024
DEFAULT_WEBHOOK_TIMEOUT = 5.0
MAX_WEBHOOK_TIMEOUT = 30.0


@dataclass(frozen=True)
class _Pending:
    cell: str
    hive: str
    session: str | None
    session_uid: str
    notice: Notice


@dataclass
class _HiveEntry:
    expires: float
    ref: Obj | None = None
    """The Hive as an Event's involved object (None: the hive does not exist)."""
    target: WebhookTarget | None = None
    problem: str = ""
    """Why the hive's webhook cannot be used (a missing secret...); empty when fine."""


class Notifier:
    def __init__(
        self,
        store: Store,
        *,
        recorder: EventRecorder | None = None,
        metrics: NotifyMetrics | None = None,
        sender: WebhookSender | None = None,
        ttl: float = 5.0,
        queue_size: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.recorder = recorder or EventRecorder(store, component="apiary-router")
        self.metrics = metrics or NotifyMetrics()
        self.sender = sender or WebhookSender()
        if self.sender.on_attempt is None:
            self.sender.on_attempt = self._count_delivery
        self.ttl = ttl
        self.clock = clock
        self.now = now
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=queue_size)
        self._hives: dict[tuple[str, str], _HiveEntry] = {}
        self._last_drop_log = float("-inf")

    # ------------------------------------------------------------------ the router's side

    async def on_notice(self, info: SessionInfo, event: str, detail: Obj) -> None:
        """The router's hook (``Router.on_notice``): returns at once, whatever the webhook does."""
        self.notice(info.cell, info.hive, event, detail, session=info.name, session_uid=info.uid)

    def notice(
        self,
        cell: str,
        hive: str,
        event: str,
        detail: Obj,
        *,
        session: str | None = None,
        session_uid: str = "",
    ) -> bool:
        """Count the notice and queue it for Events and webhooks; False when it was dropped."""
        self.metrics.notices.labels(event, cell, hive).inc()
        if event in VIOLATION_EVENTS:
            reason = str(detail.get("reason") or DEFAULT_REASONS[event])
            self.metrics.violations.labels(reason, cell, hive).inc()
        stamp = self.now().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        pending = _Pending(
            cell, hive, session, session_uid, Notice(event, stamp, cell, hive, session, detail)
        )
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self.metrics.dropped.inc()
            if self.clock() - self._last_drop_log > 10.0:
                self._last_drop_log = self.clock()
                log.warning("notifier queue full: dropping notices", notice=event, hive=hive)
            return False
        return True

    # ------------------------------------------------------------------------ the worker

    async def run(self) -> None:
        """Take notices until cancelled; then cancel deliveries still running."""
        try:
            while True:
                pending = await self._queue.get()
                try:
                    await self._handle(pending)
                except Exception:  # one bad notice must not stop the others
                    log.exception("notice failed", notice=pending.notice.event, hive=pending.hive)
                finally:
                    self._queue.task_done()
        finally:
            await self.sender.aclose()

    async def drain(self) -> None:
        """Wait until every queued notice is handled and every delivery has ended (tests,
        shutdown). Needs :meth:`run` to be running."""
        await self._queue.join()
        await self.sender.drain()

    async def _handle(self, pending: _Pending) -> None:
        entry = await self.hive(pending.cell, pending.hive)
        notice = pending.notice
        if notice.event in WARNING_EVENTS:
            await self._record(pending, entry)
        target = entry.target
        if target is None:
            if entry.problem:
                self._count_delivery("skipped")
            return
        if target.wants(notice.event):
            self.sender.submit(target, notice)

    def _count_delivery(self, result: str) -> None:
        self.metrics.deliveries.labels(result).inc()

    # -------------------------------------------------------------------------- Events

    async def _record(self, pending: _Pending, entry: _HiveEntry) -> None:
        reason, message = event_text(pending.notice.event, pending.notice.detail)
        if pending.session:
            session = {
                "kind": "Session",
                "metadata": {
                    "name": pending.session,
                    "namespace": pending.cell,
                    "uid": pending.session_uid,
                },
            }
            await self.recorder.try_record(session, "Warning", reason, message)
        if entry.ref is not None:
            await self.recorder.try_record(entry.ref, "Warning", reason, message)

    # ---------------------------------------------------------------- hive webhook cache

    async def hive(self, cell: str, hive: str) -> _HiveEntry:
        """The hive's reference and resolved webhook, read from the store at most once a TTL."""
        now = self.clock()
        cached = self._hives.get((cell, hive))
        if cached is not None and now < cached.expires:
            return cached
        if not hive:  # a session without a hive: nothing to read, nobody to tell
            return _HiveEntry(now + self.ttl)
        try:
            obj = await self.store.get("Hive", cell, hive)
        except NotFound:
            entry = _HiveEntry(now + self.ttl)
        except ApiaryError as exc:  # the store is away: keep what we knew, ask again soon
            log.warning("cannot read the hive for notices", cell=cell, hive=hive, error=str(exc))
            entry = cached or _HiveEntry(now)
            entry.expires = now + min(self.ttl, 1.0)
        else:
            entry = await self._resolve(cell, obj, now)
            if entry.problem and (cached is None or cached.problem != entry.problem):
                log.warning("hive webhook unusable", cell=cell, hive=hive, problem=entry.problem)
                await self.recorder.try_record(
                    obj, "Warning", "WebhookMisconfigured", entry.problem[:MAX_EVENT_MESSAGE]
                )
        self._hives[(cell, hive)] = entry
        return entry

    def forget(self, cell: str, hive: str) -> None:
        """Drop a cached hive so the next notice reads it again."""
        self._hives.pop((cell, hive), None)

    async def _resolve(self, cell: str, obj: Obj, now: float) -> _HiveEntry:
        meta = obj.get("metadata") or {}
        ref: Obj = {
            "kind": "Hive",
            "metadata": {"name": meta.get("name"), "namespace": cell, "uid": meta.get("uid")},
        }
        entry = _HiveEntry(now + self.ttl, ref)
        hook = (obj.get("spec") or {}).get("webhook")
        if not isinstance(hook, dict) or not hook.get("url"):
            return entry
        events = hook.get("events")
        timeout = hook.get("timeoutSeconds") or DEFAULT_WEBHOOK_TIMEOUT
        secret: bytes | None = None
        ref_ = hook.get("secretRef")
        if isinstance(ref_, dict) and ref_.get("name"):
            try:
                secret = await self._secret(cell, str(ref_["name"]), str(ref_.get("key") or ""))
            except _Unusable as exc:
                entry.problem = f"spec.webhook.secretRef: {exc}"
                return entry
        entry.target = WebhookTarget(
            url=str(hook["url"]),
            events=frozenset(map(str, events)) if isinstance(events, list) else None,
            secret=secret,
            timeout=min(float(timeout), MAX_WEBHOOK_TIMEOUT),
        )
        return entry

    async def _secret(self, cell: str, name: str, key: str) -> bytes:
        try:
            secret = await self.store.get("Secret", cell, name)
        except NotFound:
            raise _Unusable(f"Secret {name!r} not found in cell {cell!r}") from None
        data = secret.get("data") or {}
        if key not in data:
            raise _Unusable(f"Secret {name!r} has no key {key!r}")
        try:
            return base64.b64decode(str(data[key]), validate=True)
        except binascii.Error:
            raise _Unusable(f"Secret {name!r} key {key!r} is not base64") from None


class _Unusable(Exception):
    pass


def event_text(event: str, detail: Obj) -> tuple[str, str]:
    """(reason, message) of the Warning Event for a notice. Messages leave out what changes on
    every attempt (drone, attempt number) so repeats count up one Event instead of adding more."""
    reason = str(detail.get("reason") or DEFAULT_REASONS.get(event, "Notice"))
    text = str(detail.get("message") or reason)
    stage = detail.get("stage")
    where = f"stage {stage}: " if stage else ""
    if event == "dead_letter":
        attempts = detail.get("attempts")
        message = f"{where}{reason}: {text}; dead-lettered after {attempts} attempts"
        return "DeadLettered", message[:MAX_EVENT_MESSAGE]
    return reason, f"{where}{text}"[:MAX_EVENT_MESSAGE]
