"""Overload protection: a bound on the requests each principal has in flight, in lanes.

A simple form of Kubernetes' API Priority and Fairness. Once a request's principal is known
(:class:`~apiary.api.middleware.ApiMiddleware` authenticated it), it takes a slot in one lane:

============================  =========================================================
``user``                      short requests of every principal but nodes (cluster-admin
                              included): at most :attr:`OverloadLimits.inflight_per_principal`
                              per principal, :attr:`~OverloadLimits.inflight_total` together
``node``                      short requests of node tokens — heartbeats (the Node's lease),
                              drone status writes, log pushes: at most
                              :attr:`~OverloadLimits.node_inflight_per_node` per node and in
                              no total, so no flood of user requests takes their room
``long-running``              watches, log follows, session streams (SSE), long-polls
                              (``wait`` > 0), WebSockets, and A2A / MCP calls (a POST to
                              ``/a2a/…`` or ``/mcp/…`` may stream or block until a hive
                              answers, docs/interop.md) of non-node principals:
                              :attr:`~OverloadLimits.long_running_per_principal` /
                              :attr:`~OverloadLimits.long_running_total`
``node-long-running``         the same of node tokens: per node only
============================  =========================================================

Long-running requests are in no short lane (as Kubernetes keeps watches out of max-inflight): an
open watch would otherwise hold a slot for hours. A request over a bound is answered at once —
nothing is queued, so a flood costs the server a counter and a small 429, never memory — with
``429 TooManyRequests``, ``Retry-After`` and the error body every error has; ``details[0].field``
names the setting that refused it. The public paths (``/healthz``, ``/readyz``, ``/version``,
the docs: served before authentication) and refused tokens carry no principal and take no slot.

Bounds are per principal (``Principal.user``: one per token), so one busy client cannot take the
server from the others; the totals bound what many principals together put on the store. The
counters are plain ints touched only on the event loop; a principal's entry is dropped when its
last request ends, so they stay as small as what is in flight.

Installed twice with one :class:`Limiter`: as :class:`FairnessMiddleware` inside ApiMiddleware
(for what FastAPI routes) and as :class:`FairDispatcher` (for the plain routes the fast path
serves directly, which never reach an inner middleware).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from apiary.api.fastpath import Dispatcher, Serve
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.security.roles import NODE, Principal

_TRUE = frozenset({"true", "1", "yes", "all"})
LONG_POSTS = ("/a2a/", "/mcp/")
"""POSTs that may stream or block until a hive answers (A2A ``SendMessage``/streams, MCP tool
calls on apiaryd): counted in the long-running lane, never holding a short slot."""
"""What ``watch``/``follow`` take for true (apiary.api.params.flag)."""
LANE_KEY = "apiary.lane"
"""Set in the scope once a request holds a slot: the lane's name (a second layer lets it by)."""


@dataclass
class OverloadLimits:
    """How many requests may be in flight at once, per lane (docs/api.md, "Overload"). 0: no
    bound. apiaryd's defaults are these (``Settings.overload``)."""

    inflight_per_principal: int = 64
    """Short requests (everything but the long-running ones) one principal other than a node
    may have in flight; one more is answered 429. Default 64: ``apiaryctl`` sends one at a
    time, and the API's latency target is for 50 concurrent clients of one token (DESIGN §8,
    ``bench/api.py``); beyond that one principal only lengthens the store's queue."""

    inflight_total: int = 256
    """Short requests of all principals but nodes together (Kubernetes' max-requests-inflight
    is 400 for a far bigger server); beyond it 429 whoever asks."""

    node_inflight_per_node: int = 64
    """Short requests one node token may have in flight (its heartbeat, up to 16 drone status
    writes, log pushes, reads): a lane of its own, counted in no total."""

    long_running_per_principal: int = 128
    """Open watches, log follows, session streams (SSE), long-polls and WebSockets one
    principal (nodes included) may hold; they count in no short-request bound."""

    long_running_total: int = 2048
    """Long-running requests of all principals but nodes together."""

    retry_after_seconds: int = 1
    """The ``Retry-After`` (whole seconds) of a 429: what is in flight ends in milliseconds."""


@dataclass
class Lane:
    """One pool of slots: ``held`` per principal (dropped at zero) and in all."""

    name: str
    per_principal: int
    per_setting: str
    total: int = 0
    total_setting: str = ""
    held: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    refused: int = 0

    def take(self, who: str) -> tuple[str, str] | None:
        """Take a slot for ``who``: None when taken, else (the setting, why not)."""
        mine = self.held.get(who, 0)
        if self.per_principal and mine >= self.per_principal:
            self.refused += 1
            return self.per_setting, (
                f'{mine} requests of user "{who}" are in flight'
                f" in lane {self.name}, the most "
                f"one principal may have (the server's limit)"
            )
        if self.total and self.in_flight >= self.total:
            self.refused += 1
            return self.total_setting, (
                f"{self.in_flight} requests are in flight in lane {self.name}, the most the "
                f"server takes at once (the server's limit)"
            )
        self.held[who] = mine + 1
        self.in_flight += 1
        return None

    def give(self, who: str) -> None:
        left = self.held[who] - 1
        if left:
            self.held[who] = left
        else:
            del self.held[who]
        self.in_flight -= 1


class Limiter:
    """The lanes and the one place requests are admitted to them (see the module docstring)."""

    def __init__(self, limits: OverloadLimits, registry: CollectorRegistry | None = None) -> None:
        self.limits = limits
        self.user = Lane(
            "user",
            limits.inflight_per_principal,
            "inflight_per_principal",
            limits.inflight_total,
            "inflight_total",
        )
        self.node = Lane("node", limits.node_inflight_per_node, "node_inflight_per_node")
        self.long = Lane(
            "long-running",
            limits.long_running_per_principal,
            "long_running_per_principal",
            limits.long_running_total,
            "long_running_total",
        )
        self.node_long = Lane(
            "node-long-running", limits.long_running_per_principal, "long_running_per_principal"
        )
        self.lanes = (self.user, self.node, self.long, self.node_long)
        self._retry_after = str(max(1, int(limits.retry_after_seconds))).encode()
        if registry is not None:
            registry.register(_LaneMetrics(self))

    def lane_of(self, scope: Scope, principal: Principal) -> Lane:
        node = principal.role == NODE
        if long_running(scope):
            return self.node_long if node else self.long
        return self.node if node else self.user

    async def __call__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Run ``app`` holding a slot of the request's lane, or answer 429 when there is none."""
        principal = scope.get(PRINCIPAL_KEY)
        if principal is None or LANE_KEY in scope or scope["type"] not in ("http", "websocket"):
            await app(scope, receive, send)
            return
        lane = self.lane_of(scope, principal)
        who = principal.user
        refusal = lane.take(who)
        if refusal is not None:
            await self._refuse(scope, send, *refusal)
            return
        scope[LANE_KEY] = lane.name
        try:
            await app(scope, receive, send)
        finally:
            lane.give(who)

    async def _refuse(self, scope: Scope, send: Send, setting: str, why: str) -> None:
        body = {
            "code": 429,
            "reason": "TooManyRequests",
            "message": f"too many requests in flight: {why}; retry after "
            f"{self._retry_after.decode()}s",
            "details": [{"field": setting, "message": why}],
        }
        payload = orjson.dumps(body)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"retry-after", self._retry_after),
        ]
        if scope["type"] == "websocket":  # refuse the handshake: an HTTP 429 where offered
            if "websocket.http.response" in (scope.get("extensions") or {}):
                await send(
                    {"type": "websocket.http.response.start", "status": 429, "headers": headers}
                )
                await send({"type": "websocket.http.response.body", "body": payload})
            else:
                await send({"type": "websocket.close", "code": 1013, "reason": "try again later"})
            return
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def long_running(scope: Scope) -> bool:
    """A WebSocket, or a GET that asks for a stream: ``watch``/``follow`` true, ``wait`` > 0
    (a long-poll), or a path ending in ``/stream`` (SSE). Asking is enough: such a request is
    counted in a long-running lane whatever the route makes of it."""
    if scope["type"] == "websocket":
        return True
    if scope["method"] == "POST" and scope["path"].startswith(LONG_POSTS):
        return True
    if scope["method"] != "GET":
        return False
    if scope["path"].endswith("/stream"):
        return True
    query: bytes = scope.get("query_string") or b""
    if not (b"watch" in query or b"follow" in query or b"wait" in query):
        return False
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key in ("watch", "follow") and value.strip().lower() in _TRUE:
            return True
        if key == "wait":
            try:
                if float(value.strip().rstrip("s")) > 0:
                    return True
            except ValueError:
                continue
    return False


class FairnessMiddleware:
    """The limiter for what FastAPI routes: add it *before* ApiMiddleware (so it sits inside,
    where the principal is known)."""

    def __init__(self, app: ASGIApp, limiter: Limiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.limiter(self.app, scope, receive, send)


class FairDispatcher(Dispatcher):
    """The fast path's dispatcher, each directly served request holding a slot like the rest."""

    def __init__(self, limiter: Limiter) -> None:
        super().__init__()
        self.limiter = limiter

    def resolve(self, scope: Scope) -> Serve | None:
        serve = super().resolve(scope)
        if serve is None:
            return None
        direct = serve
        limiter = self.limiter

        async def limited(scope: Scope, receive: Receive, send: Send) -> None:
            await limiter(direct, scope, receive, send)

        return limited


class _LaneMetrics(Collector):
    """``apiary_api_inflight_requests{lane}`` and ``apiary_api_rejected_requests_total{lane}``,
    read from the counters at scrape time (nothing on the request path)."""

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter

    def collect(self) -> Iterator[Metric]:
        inflight = GaugeMetricFamily(
            "apiary_api_inflight_requests", "requests holding a slot, per lane", labels=["lane"]
        )
        refused = CounterMetricFamily(
            "apiary_api_rejected_requests",
            "requests answered 429 for want of a slot, per lane",
            labels=["lane"],
        )
        for lane in self.limiter.lanes:
            inflight.add_metric([lane.name], lane.in_flight)
            refused.add_metric([lane.name], lane.refused)
        yield inflight
        yield refused
