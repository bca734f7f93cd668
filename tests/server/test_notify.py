"""The notifier against a real HTTP receiver on 127.0.0.1 and a real store: signed webhooks,
the events filter, retries with backoff (injected sleep), unreachable URLs, Events, counters."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from apiary.api import api_state, create_app
from apiary.router import SessionInfo
from apiary.server.notify import Notifier, event_text
from apiary.server.notify_metrics import NotifyMetrics
from apiary.server.webhooks import RetrySettings, WebhookSender, verify
from apiary.store import Store, open_store

Obj = dict[str, Any]
CELL = "default"
SECRET = b"hook-secret-\x00\xff-bytes"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Obj:
        doc: Obj = orjson.loads(self.body)
        return doc


@dataclass
class Receiver:
    """A webhook endpoint: records each POST and answers from ``script`` (then 200);
    ``hang`` makes it never answer (a black hole)."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    hang: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def app(self, scope: Obj, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            msg = await receive()
            body += msg.get("body", b"")
            if not msg.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers, body))
        self.arrived.set()
        if self.hang:
            await asyncio.sleep(3600)
        status = self.script.pop(0) if self.script else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@contextlib.asynccontextmanager
async def serving(receiver: Receiver) -> AsyncIterator[Receiver]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    receiver.url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    server = uvicorn.Server(
        uvicorn.Config(
            receiver.app,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=0,
        )
    )
    task = asyncio.create_task(server._serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.005)
    try:
        yield receiver
    finally:
        server.should_exit = True
        server.force_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 5)
        sock.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with serving(Receiver()) as r:
        yield r


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    async with open_store("memory://") as s:
        yield s


class FakeSleep:
    """Records the backoff delays instead of waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@contextlib.asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[Notifier]:
    task = asyncio.create_task(notifier.run())
    try:
        yield notifier
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def make_notifier(store: Store, sleep: FakeSleep | None = None, **kw: Any) -> Notifier:
    sender = WebhookSender(RetrySettings(max_attempts=4), sleep=sleep or FakeSleep())
    return Notifier(store, sender=sender, metrics=NotifyMetrics(), **kw)


def hive_obj(name: str, webhook: Obj | None = None) -> Obj:
    spec: Obj = {"pattern": "pipeline", "stages": [{"name": "s", "agentRef": "a"}]}
    if webhook is not None:
        spec["webhook"] = webhook
    return {"apiVersion": "apiary.io/v1", "kind": "Hive",
            "metadata": {"name": name, "namespace": CELL}, "spec": spec}  # fmt: skip


async def add_secret(store: Store) -> None:
    await store.create({"apiVersion": "apiary.io/v1", "kind": "Secret",
                        "metadata": {"name": "hooks", "namespace": CELL},
                        "data": {"hmac": base64.b64encode(SECRET).decode()}})  # fmt: skip


def info(hive: str = "h", session: str = "s1") -> SessionInfo:
    return SessionInfo(CELL, session, hive, "Running", False, f"uid-{session}")


TIMEOUT = {"stage": "s", "drone": "d-1", "dispatch": "x1", "reason": "ResponseTimeout",
           "message": "no answer within 1s", "attempt": 0}  # fmt: skip


def sample(metrics: NotifyMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_a_signed_notice_reaches_the_receiver(store: Store, receiver: Receiver) -> None:
    await add_secret(store)
    hook = {"url": receiver.url, "secretRef": {"name": "hooks", "key": "hmac"}}
    await store.create(hive_obj("h", hook))
    notifier = make_notifier(store)
    async with running(notifier):
        await notifier.on_notice(info(), "session_completed", {"input": "m1"})
        await notifier.drain()
    (got,) = receiver.received
    assert got.json["event"] == "session_completed"
    assert {k: got.json[k] for k in ("cell", "hive", "session", "detail")} == {
        "cell": CELL, "hive": "h", "session": "s1", "detail": {"input": "m1"}}  # fmt: skip
    assert got.json["time"].endswith("Z")
    assert got.headers["x-apiary-event"] == "session_completed"
    assert len(got.headers["x-apiary-delivery"]) == 32
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-apiary-signature"].startswith("sha256=")
    assert verify(SECRET, got.body, got.headers["x-apiary-signature"])
    assert not verify(b"another key", got.body, got.headers["x-apiary-signature"])
    assert sample(notifier.metrics, "apiary_webhook_deliveries_total", result="delivered") == 1


async def test_without_a_secret_notices_are_unsigned(store: Store, receiver: Receiver) -> None:
    await store.create(hive_obj("h", {"url": receiver.url}))
    notifier = make_notifier(store)
    async with running(notifier):
        await notifier.on_notice(info(), "session_started", {"input": "m1"})
        await notifier.drain()
    (got,) = receiver.received
    assert "x-apiary-signature" not in got.headers


async def test_the_events_filter_is_honoured(store: Store, receiver: Receiver) -> None:
    await store.create(hive_obj("h", {"url": receiver.url, "events": ["timeout", "dead_letter"]}))
    await store.create(hive_obj("quiet"))  # no webhook at all
    notifier = make_notifier(store)
    async with running(notifier):
        await notifier.on_notice(info(), "session_started", {"input": "m1"})
        await notifier.on_notice(info(), "timeout", TIMEOUT)
        await notifier.on_notice(info(), "session_completed", {"input": "m1"})
        await notifier.on_notice(info("quiet"), "timeout", TIMEOUT)
        await notifier.drain()
    assert [r.json["event"] for r in receiver.received] == ["timeout"]
    assert receiver.received[0].json["detail"] == TIMEOUT
    assert sample(notifier.metrics, "apiary_notices_total", event="session_started",
                  cell=CELL, hive="h") == 1  # fmt: skip


async def test_500_twice_then_200_is_delivered_on_the_third_try(
    store: Store, receiver: Receiver
) -> None:
    receiver.script = [500, 503]
    await store.create(hive_obj("h", {"url": receiver.url}))
    sleep = FakeSleep()
    notifier = make_notifier(store, sleep)
    started = time.monotonic()
    async with running(notifier):
        await notifier.on_notice(info(), "dead_letter", {**TIMEOUT, "attempts": 3})
        await notifier.drain()
    assert time.monotonic() - started < 2.0  # the backoff was injected, not waited
    assert len(receiver.received) == 3
    assert len({r.headers["x-apiary-delivery"] for r in receiver.received}) == 1
    assert len({r.body for r in receiver.received}) == 1
    assert sleep.delays == [0.5, 1.0]
    m = notifier.metrics
    assert sample(m, "apiary_webhook_deliveries_total", result="retried") == 2
    assert sample(m, "apiary_webhook_deliveries_total", result="delivered") == 1


async def test_a_4xx_is_not_retried(store: Store, receiver: Receiver) -> None:
    receiver.script = [404]
    await store.create(hive_obj("h", {"url": receiver.url}))
    notifier = make_notifier(store)
    async with running(notifier):
        await notifier.on_notice(info(), "session_failed", {"reason": "X", "message": "y"})
        await notifier.drain()
    assert len(receiver.received) == 1
    assert sample(notifier.metrics, "apiary_webhook_deliveries_total", result="rejected") == 1


async def test_attempts_are_capped_then_the_url_counts_as_down(
    store: Store, receiver: Receiver
) -> None:
    receiver.script = [500] * 10
    now = [0.0]
    sleep = FakeSleep()
    sender = WebhookSender(RetrySettings(max_attempts=4, down_for=30), sleep=sleep,
                           clock=lambda: now[0])  # fmt: skip
    await store.create(hive_obj("h", {"url": receiver.url}))
    notifier = Notifier(store, sender=sender, metrics=NotifyMetrics())
    m = notifier.metrics
    async with running(notifier):
        await notifier.on_notice(info(), "session_started", {})
        await notifier.drain()
        assert len(receiver.received) == 4  # RetrySettings(max_attempts=4)
        assert sleep.delays == [0.5, 1.0, 2.0]
        # Down: the next notices are not sent at all...
        await notifier.on_notice(info(), "session_completed", {})
        await notifier.drain()
        assert len(receiver.received) == 4
        # ...until the circuit half-opens: one probe, one attempt, still failing.
        now[0] = 31.0
        await notifier.on_notice(info(), "session_completed", {})
        await notifier.on_notice(info(), "session_completed", {})
        await notifier.drain()
        assert len(receiver.received) == 5 and sleep.delays == [0.5, 1.0, 2.0]
        # The next probe succeeds: the circuit closes and notices flow again.
        receiver.script = []
        now[0] = 62.0
        await notifier.on_notice(info(), "session_failed", {})
        await notifier.on_notice(info(), "session_failed", {})
        await notifier.drain()
    assert len(receiver.received) == 7
    assert sample(m, "apiary_webhook_deliveries_total", result="undeliverable") == 4
    assert sample(m, "apiary_webhook_deliveries_total", result="delivered") == 2


async def test_notices_reach_one_url_in_order(store: Store, receiver: Receiver) -> None:
    await store.create(hive_obj("h", {"url": receiver.url}))
    notifier = make_notifier(store)
    async with running(notifier):
        for i in range(20):
            await notifier.on_notice(info(), "session_started", {"n": i})
        await notifier.drain()
    assert [r.json["detail"]["n"] for r in receiver.received] == list(range(20))


async def test_a_full_lane_drops_and_counts(store: Store, receiver: Receiver) -> None:
    receiver.hang = True
    await store.create(hive_obj("h", {"url": receiver.url, "timeoutSeconds": 0.2}))
    sender = WebhookSender(RetrySettings(max_attempts=1), lane_size=3)
    notifier = Notifier(store, sender=sender, metrics=NotifyMetrics())
    async with running(notifier):
        for _ in range(10):
            await notifier.on_notice(info(), "session_started", {})
        await asyncio.wait_for(notifier.drain(), 10)
    m = notifier.metrics
    dropped = sample(m, "apiary_webhook_deliveries_total", result="dropped")
    failed = sample(m, "apiary_webhook_deliveries_total", result="undeliverable")
    assert dropped >= 6 and dropped + failed == 10  # at most 3 queued + 1 in flight
    assert len(receiver.received) == 1  # the rest failed fast: the URL was down


async def test_violations_become_deduplicated_warning_events(store: Store) -> None:
    await store.create(hive_obj("h"))
    notifier = make_notifier(store)
    async with running(notifier):
        await notifier.on_notice(info(), "timeout", TIMEOUT)
        await notifier.on_notice(info(), "timeout", {**TIMEOUT, "attempt": 1, "drone": "d-2"})
        await notifier.on_notice(info(), "dead_letter", {**TIMEOUT, "attempts": 2})
        await notifier.on_notice(info(), "session_started", {})  # not a violation: no Event
        await notifier.drain()
    events = (await store.list("Event", CELL)).items
    by = {(e["involvedObject"]["kind"], e["reason"]): e for e in events}
    assert set(by) == {("Session", "ResponseTimeout"), ("Hive", "ResponseTimeout"),
                       ("Session", "DeadLettered"), ("Hive", "DeadLettered")}  # fmt: skip
    timeout = by[("Session", "ResponseTimeout")]
    assert timeout["type"] == "Warning" and timeout["count"] == 2
    assert timeout["message"] == "stage s: no answer within 1s"
    assert timeout["involvedObject"] == {"kind": "Session", "name": "s1", "namespace": CELL,
                                         "uid": "uid-s1"}  # fmt: skip
    hive_uid = (await store.get("Hive", CELL, "h"))["metadata"]["uid"]
    assert by[("Hive", "ResponseTimeout")]["involvedObject"]["uid"] == hive_uid
    assert "dead-lettered after 2 attempts" in by[("Hive", "DeadLettered")]["message"]
    m = notifier.metrics
    assert sample(m, "apiary_guardrail_violations_total", reason="ResponseTimeout",
                  cell=CELL, hive="h") == 2  # fmt: skip
    assert sample(m, "apiary_notices_total", event="dead_letter", cell=CELL, hive="h") == 1


def test_event_text_for_each_violation() -> None:
    assert event_text("guardrail_violation", {"reason": "MaxTurnsExceeded",
                                              "message": "8 turns"}) == (
        "MaxTurnsExceeded", "8 turns")  # fmt: skip
    assert event_text("timeout", {"stage": "a"}) == ("ResponseTimeout", "stage a: ResponseTimeout")
    reason, message = event_text("dead_letter", {"stage": "a", "reason": "AgentError",
                                                 "message": "x" * 5000, "attempts": 4})  # fmt: skip
    assert reason == "DeadLettered" and len(message) == 1024


async def test_the_hive_is_read_once_per_ttl(store: Store, receiver: Receiver) -> None:
    now = [0.0]
    await store.create(hive_obj("h", {"url": receiver.url, "events": ["timeout"]}))
    notifier = make_notifier(store, ttl=5.0, clock=lambda: now[0])
    async with running(notifier):
        await notifier.on_notice(info(), "session_started", {})
        await notifier.drain()
        changed = hive_obj("h", {"url": receiver.url})  # now subscribed to everything
        changed["metadata"]["resourceVersion"] = (await store.get("Hive", CELL, "h"))[
            "metadata"]["resourceVersion"]  # fmt: skip
        await store.update(changed)
        await notifier.on_notice(info(), "session_started", {})
        await notifier.drain()
        assert receiver.received == []  # still the cached config
        now[0] = 6.0
        await notifier.on_notice(info(), "session_started", {})
        await notifier.drain()
    assert [r.json["event"] for r in receiver.received] == ["session_started"]


async def test_a_missing_secret_skips_delivery_and_says_why(
    store: Store, receiver: Receiver
) -> None:
    hook = {"url": receiver.url, "secretRef": {"name": "nope", "key": "hmac"}}
    await store.create(hive_obj("h", hook))
    notifier = make_notifier(store)
    async with running(notifier):
        await notifier.on_notice(info(), "session_started", {})
        await notifier.drain()
    assert receiver.received == []
    (event,) = (await store.list("Event", CELL)).items
    assert event["reason"] == "WebhookMisconfigured" and event["type"] == "Warning"
    assert "spec.webhook.secretRef" in event["message"] and "'nope'" in event["message"]
    assert sample(notifier.metrics, "apiary_webhook_deliveries_total", result="skipped") == 1


async def test_a_full_queue_drops_and_counts(store: Store) -> None:
    notifier = make_notifier(store, queue_size=2)  # not running: nothing takes notices
    assert notifier.notice(CELL, "h", "session_started", {})
    assert notifier.notice(CELL, "h", "session_started", {})
    assert not notifier.notice(CELL, "h", "session_started", {})
    assert sample(notifier.metrics, "apiary_notices_dropped_total") == 1


async def test_counters_are_on_the_api_metrics_endpoint(store: Store) -> None:
    app = create_app(store, "tok-123")
    metrics = NotifyMetrics(api_state(app).metrics.registry)
    notifier = Notifier(store, metrics=metrics)
    notifier.notice(CELL, "h", "timeout", TIMEOUT, session="s1")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://apiary") as client:
        r = await client.get("/metrics", headers={"Authorization": "Bearer tok-123"})
    text = r.text
    assert 'apiary_notices_total{cell="default",event="timeout",hive="h"} 1.0' in text
    assert (
        'apiary_guardrail_violations_total{cell="default",hive="h",reason="ResponseTimeout"} 1.0'
        in text
    )
