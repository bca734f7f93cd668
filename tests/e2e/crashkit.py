"""A client that keeps its promises across apiaryd crashes, for the fault test.

What "accepted" means here is the API's contract, no more: a session exists once a create got 201
(or 409 AlreadyExists on a retry — the first try went through before the crash); an input is
accepted once a POST of it got 202. Until then the client retries — connection errors, 5xx
(a restarting server answers 503) — with the *same* session name and the *same* message id, so
a retry of something that did go through is a no-op on the server. Then it long-polls the
session's entries until the final answering its input shows up, reconnecting across restarts
from the last sequence number it saw (the journal's seq is durable, so nothing is skipped).

Every attempt is counted, so the test can say how often a request met a dead server.

The client's connections are spread over several small httpx pools, a session always on the
same one: httpcore's pool scans every connection for every queued request each time a request
ends, so one pool of 64 busy connections spends more CPU than the server it drives (the client
was the bottleneck of the fault test, apiaryd idle at 15 %). The server sees the same requests
and the same concurrency.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

Obj = dict[str, Any]

RETRY_DELAY = 0.05
"""Seconds between two tries while the server is away (a restart takes about a second)."""

TRANSIENT = frozenset({502, 503, 504})


class Refused(Exception):
    """The server answered with an error that a retry will not change (a bug in the test or
    in apiaryd): the status and the body are kept for the report."""

    def __init__(self, what: str, response: httpx.Response) -> None:
        super().__init__(f"{what}: HTTP {response.status_code}: {response.text[:500]}")
        self.status = response.status_code


@dataclass
class Tally:
    """What the client went through: retries by cause, per operation."""

    retries: dict[str, int] = field(default_factory=dict)
    already_existed: int = 0

    def retry(self, op: str, why: str) -> None:
        key = f"{op}:{why}"
        self.retries[key] = self.retries.get(key, 0) + 1


@dataclass
class Answer:
    session: str
    input_id: str
    final: Obj
    accepted_at: float
    answered_at: float


class CrashTolerantClient:
    """One HTTP client for many sessions of one cell; ``base()`` gives the server's current URL
    (it may move between restarts), ``token`` is the admin token (kept in the data dir)."""

    def __init__(
        self,
        base: Callable[[], str],
        token: str,
        cell: str,
        *,
        concurrency: int = 64,
        give_up_after: float = 120.0,
    ) -> None:
        self.base = base
        self.cell = cell
        self.give_up_after = give_up_after
        self.tally = Tally()
        self.pools = sharded_clients(token, concurrency)

    async def aclose(self) -> None:
        for pool in self.pools:
            await pool.aclose()

    def _sessions(self) -> str:
        return f"{self.base()}/api/v1/cells/{self.cell}/sessions"

    async def _request(
        self, op: str, method: str, session: str, path: str, **kw: Any
    ) -> httpx.Response:
        """One request about ``session``, repeated while the server is away or restarting; any
        other answer is returned to the caller to judge."""
        deadline = time.monotonic() + self.give_up_after
        http = pool_of(self.pools, session)
        while True:
            try:
                r = await http.request(method, self._sessions() + path, **kw)
            except httpx.TransportError as exc:  # refused, reset, closed mid-answer, timed out
                self.tally.retry(op, type(exc).__name__)
            else:
                if r.status_code not in TRANSIENT:
                    return r
                self.tally.retry(op, str(r.status_code))
            if time.monotonic() > deadline:
                raise TimeoutError(f"{op} {path}: no answer for {self.give_up_after}s")
            await asyncio.sleep(RETRY_DELAY)

    async def create_session(self, name: str, hive: str) -> None:
        """Created (201), or created by an earlier try whose answer the crash swallowed (409
        AlreadyExists). No ``spec.input``: the input goes with an id of ours, see :meth:`send`."""
        body = {"apiVersion": "apiary.io/v1", "kind": "Session",
                "metadata": {"name": name, "namespace": self.cell},
                "spec": {"hiveRef": hive}}  # fmt: skip
        r = await self._request("create", "POST", name, "", json=body)
        if r.status_code == 409 and "already exists" in r.text.lower():
            self.tally.already_existed += 1
            return
        if r.status_code != 201:
            raise Refused(f"create session {name}", r)

    async def send(self, session: str, message_id: str, payload: Any) -> float:
        """Send until 202 (a re-send of the same id is a no-op); returns when it was accepted."""
        r = await self._request(
            "send",
            "POST",
            session,
            f"/{session}/messages",
            json={"id": message_id, "payload": payload},
        )
        if r.status_code != 202:
            raise Refused(f"send to {session}", r)
        got = r.json()
        if got.get("id") != message_id:
            raise AssertionError(f"send to {session}: the server took id {got.get('id')!r}")
        return time.monotonic()

    async def wait_final(self, session: str, input_id: str, accepted_at: float) -> Answer:
        """Long-poll the session's entries until the final answering ``input_id``; an error
        entry for it fails the wait (the test expects every answer)."""
        after = 0
        deadline = time.monotonic() + self.give_up_after
        while time.monotonic() < deadline:
            r = await self._request(
                "poll", "GET", session, f"/{session}/messages", params={"after": after, "wait": 10}
            )
            if r.status_code != 200:
                raise Refused(f"poll {session}", r)
            for e in r.json()["items"]:
                after = max(after, int(e["seq"]))
                if e["kind"] == "final" and e.get("parent") == input_id:
                    return Answer(session, input_id, e, accepted_at, time.monotonic())
                if e["kind"] == "error" and e.get("parent") in (input_id, None):
                    raise AssertionError(f"session {session} failed: {e['message']}")
        raise TimeoutError(f"session {session}: no final for {input_id} in {self.give_up_after}s")

    async def transcript(self, session: str) -> list[Obj]:
        r = await self._request("transcript", "GET", session, f"/{session}/transcript")
        if r.status_code != 200:
            raise Refused(f"transcript of {session}", r)
        items: list[Obj] = r.json()["items"]
        return items

    async def run_one(self, session: str, hive: str, input_id: str, payload: Any) -> Answer:
        await self.create_session(session, hive)
        accepted = await self.send(session, input_id, payload)
        return await self.wait_final(session, input_id, accepted)


POOL_CONNECTIONS = 8
"""Connections of one pool of :func:`sharded_clients`."""


def sharded_clients(
    token: str, concurrency: int, timeout: httpx.Timeout = httpx.Timeout(30.0, connect=2.0)
) -> list[httpx.AsyncClient]:
    """Pools of :data:`POOL_CONNECTIONS` for ``concurrency`` requests in flight (plain HTTP: no
    TLS context, whose CA bundle costs 40 ms a client). Each may grow past its share, so a pool
    that more sessions happen to hash to does not hold them back."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return [
        httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            limits=limits,
            verify=False,
        )
        for _ in range(max(1, concurrency // POOL_CONNECTIONS))
    ]


def pool_of(pools: list[httpx.AsyncClient], key: str) -> httpx.AsyncClient:
    """The pool ``key`` (a session) always uses."""
    return pools[zlib.crc32(key.encode()) % len(pools)]
