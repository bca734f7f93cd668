"""Comb memory for agents, through the keeper's local HTTP server (stdlib only).

    @agent
    def chat(msg, ctx):
        n = ctx.comb.incr("turns")               # this message's session
        ctx.comb.set("last", msg.payload, ttl=3600)
        ctx.comb.append("conversation", {"user": msg.payload})
        facts = ctx.comb.search("what the user likes", limit=3)   # the cell's long-term memory
        return f"turn {n}"

The keeper lets a drone reach the session of a message only while it holds that message (until
its answer is taken), and the cell's long-term memory only as far as the AgentSpec's
``spec.memory`` allows (``read``: search; ``readwrite``: also remember/forget); anything else is a
:class:`CombError` with status 403 and the reason (docs/comb.md, "What a drone may reach").

The node puts ``APIARY_KEEPER_URL`` and ``APIARY_KEEPER_TOKEN`` in every drone's environment.
``urllib`` is imported on first use, not with :mod:`apiary.agent`, so an agent that never touches
its memory pays nothing at start-up.
"""

from __future__ import annotations

import os
from json import dumps as _dumps
from json import loads as _loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from apiary.waggle.message import Message


class CombError(Exception):
    """The keeper or the API refused: ``status`` and ``reason`` as in the API's error body."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def _q(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


class Comb:
    """One session's memory (``session`` = the session's name) plus the cell's long-term memory."""

    __slots__ = ("session", "timeout", "token", "url")

    def __init__(
        self,
        session: str | None = None,
        *,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = (url or os.environ.get("APIARY_KEEPER_URL") or "").rstrip("/")
        self.token = token or os.environ.get("APIARY_KEEPER_TOKEN") or ""
        self.session = session.rsplit("/", 1)[-1] if session else None
        self.timeout = timeout

    @classmethod
    def for_message(cls, message: Message) -> Comb:
        return cls(message.session_id)

    def with_session(self, session: str) -> Comb:
        """The same keeper, another session: reachable only while the drone holds a message
        of it (else every call is a 403 :class:`CombError`)."""
        return Comb(session, url=self.url, token=self.token, timeout=self.timeout)

    # ---------------------------------------------------------------- plumbing

    def _session_path(self, what: str) -> str:
        if not self.session:
            raise CombError(
                400, "NoSession", "this message has no sessionId: use ctx.comb.with_session(NAME)"
            )
        return f"/{what}/{_q(self.session)}"

    def _call(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any:
        if not self.url:
            raise CombError(
                503, "NoKeeper", "APIARY_KEEPER_URL is not set: the agent is not run by a node"
            )
        from urllib.error import HTTPError, URLError
        from urllib.parse import urlencode
        from urllib.request import Request, urlopen

        url = self.url + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        data = None if body is None else _dumps(body).encode()
        req = Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urlopen(req, timeout=self.timeout) as resp:
                raw = resp.read()
        except HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                err = _loads(text)
                raise CombError(exc.code, str(err.get("reason")), str(err.get("message"))) from None
            except (ValueError, AttributeError):
                raise CombError(exc.code, "Error", text[:300]) from None
        except (URLError, OSError) as exc:
            raise CombError(503, "Unavailable", f"keeper at {self.url}: {exc}") from None
        return _loads(raw) if raw else None

    # ---------------------------------------------------------- session memory

    def get(self, key: str, default: Any = None) -> Any:
        """The value at ``key``, or ``default`` when it is missing or expired."""
        try:
            return self._call("GET", self._session_path("comb") + "/" + _q(key))["value"]
        except CombError as exc:
            if exc.status == 404 and exc.reason == "NotFound" and "comb key" in exc.message:
                return default
            raise

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        body: dict[str, Any] = {"value": value}
        if ttl is not None:
            body["ttlSeconds"] = ttl
        self._call("PUT", self._session_path("comb") + "/" + _q(key), body)

    def delete(self, key: str) -> bool:
        try:
            self._call("DELETE", self._session_path("comb") + "/" + _q(key))
        except CombError as exc:
            if exc.status == 404 and "comb key" in exc.message:
                return False
            raise
        return True

    def incr(self, key: str, by: int | float = 1) -> int | float:
        """Add ``by`` atomically (a missing key counts as 0); the new value."""
        path = self._session_path("comb") + "/" + _q(key) + "/incr"
        value: int | float = self._call("POST", path, {"by": by})["value"]
        return value

    def keys(self, pattern: str = "*") -> list[str]:
        keys: list[str] = self._call("GET", self._session_path("comb"), query={"pattern": pattern})[
            "keys"
        ]
        return keys

    def clear(self) -> int:
        cleared: int = self._call("DELETE", self._session_path("comb"))["cleared"]
        return cleared

    def append(self, name: str, item: Any) -> int:
        """Append to a session list (``conversation``, ``artifacts``, …); its new length."""
        length: int = self._call(
            "POST", self._session_path("lists") + "/" + _q(name), {"item": item}
        )["length"]
        return length

    def list_range(self, name: str, start: int = 0, stop: int = -1) -> list[Any]:
        items: list[Any] = self._call(
            "GET",
            self._session_path("lists") + "/" + _q(name),
            query={"start": start, "stop": stop},
        )["items"]
        return items

    # -------------------------------------------------------- long-term memory

    def remember(self, text: str, metadata: dict[str, Any] | None = None) -> str:
        """Store a text in the cell's long-term memory; its id."""
        memory_id: str = self._call("POST", "/memory", {"text": text, "metadata": metadata})["id"]
        return memory_id

    def search(self, query: str, limit: int = 5) -> list[dict[str, Any]]:
        """``[{"id", "text", "metadata", "score"}]``, most relevant first."""
        items: list[dict[str, Any]] = self._call(
            "GET", "/memory/search", query={"q": query, "limit": limit}
        )["items"]
        return items

    def forget(self, memory_id: str) -> bool:
        try:
            self._call("DELETE", "/memory/" + _q(memory_id))
        except CombError as exc:
            if exc.status == 404 and "memory" in exc.message:
                return False
            raise
        return True


__all__ = ["Comb", "CombError"]
