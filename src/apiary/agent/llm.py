"""The LLM gateway for agents, through the keeper's local HTTP server (stdlib only).

    @agent
    def answer(msg, ctx):
        text = ctx.llm.chat(msg.payload)                  # a str: one user message
        text = ctx.llm.chat([{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": msg.payload}], temperature=0)
        for piece in ctx.llm.stream(msg.payload): ...     # content deltas as they come
        vectors = ctx.llm.embed(["a", "b"])
        return {"response": text, "confidence": 0.9}

The node forwards each call to the provider named by the AgentSpec's ``spec.llm`` with a key the
agent never sees, counts the tokens and enforces the budgets (docs/gateway.md). Every call names
the message it is for (``X-Apiary-Message-Id``) and its session (``X-Apiary-Session-Id``), so
``interface.concurrency`` > 1 is counted right, and a call is only ever for a session the drone
holds a message of (else 403 ``permission_error``).
A call over budget raises :class:`LlmError` with ``type == "budget_exceeded"`` (status 429): the
message has failed, and the agent should stop working on it.

Any OpenAI client works as well: base URL ``$APIARY_KEEPER_URL/v1``, API key
``$APIARY_KEEPER_TOKEN``. ``urllib`` is imported on first use, not with :mod:`apiary.agent`.
"""

from __future__ import annotations

import os
from json import dumps as _dumps
from json import loads as _loads

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


class LlmError(Exception):
    """The gateway or the provider refused: the HTTP ``status`` and the OpenAI-style error."""

    def __init__(self, status: int, type: str, message: str) -> None:
        super().__init__(f"{status} {type}: {message}")
        self.status = status
        self.type = type
        self.message = message


def _messages(messages: Any) -> list[Any]:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return list(messages)


class Llm:
    """OpenAI-style calls for one message (``message_id`` of ``session``) through the drone's
    gateway."""

    __slots__ = ("message_id", "session", "timeout", "token", "url")

    def __init__(
        self,
        message_id: str | None = None,
        *,
        session: str | None = None,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 300.0,
    ) -> None:
        self.url = (url or os.environ.get("APIARY_KEEPER_URL") or "").rstrip("/")
        self.token = token or os.environ.get("APIARY_KEEPER_TOKEN") or ""
        self.message_id = message_id
        self.session = session
        self.timeout = timeout

    def _open(self, method: str, path: str, body: Any = None) -> Any:
        if not self.url:
            raise LlmError(
                503, "no_keeper", "APIARY_KEEPER_URL is not set: no node runs this agent"
            )
        from urllib.error import HTTPError, URLError
        from urllib.request import Request, urlopen

        data = None if body is None else _dumps(body).encode()
        req = Request(self.url + "/v1" + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.message_id:
            req.add_header("X-Apiary-Message-Id", self.message_id)
        if self.session:
            req.add_header("X-Apiary-Session-Id", self.session)
        try:
            return urlopen(req, timeout=self.timeout)
        except HTTPError as exc:
            text = exc.read().decode("utf-8", "replace")
            try:
                err = _loads(text)["error"]
                kind, message = str(err.get("type") or "error"), str(err.get("message"))
            except (ValueError, KeyError, TypeError, AttributeError):
                kind, message = "error", text[:300]
            raise LlmError(exc.code, kind, message) from None
        except (URLError, OSError) as exc:
            raise LlmError(503, "unavailable", f"keeper at {self.url}: {exc}") from None

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body) as resp:
            raw = resp.read()
        return _loads(raw) if raw else None

    def create(self, **body: Any) -> dict[str, Any]:
        """``POST /v1/chat/completions`` with ``body`` as given; the provider's whole answer."""
        answer: dict[str, Any] = self._json("POST", "/chat/completions", body)
        return answer

    def chat(self, messages: Any, **params: Any) -> str:
        """The assistant's text for ``messages`` (a list of chat messages, or one user text)."""
        answer = self.create(messages=_messages(messages), **params)
        choices = answer.get("choices") or [{}]
        return str((choices[0].get("message") or {}).get("content") or "")

    def stream(self, messages: Any, **params: Any) -> Iterator[str]:
        """The assistant's text in pieces, as the provider streams them."""
        body = {"messages": _messages(messages), **params, "stream": True}
        with self._open("POST", "/chat/completions", body) as resp:
            for line in resp:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    return
                chunk = _loads(data)
                if "error" in chunk:
                    err = chunk["error"]
                    raise LlmError(502, str(err.get("type")), str(err.get("message")))
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece

    def embed(self, inputs: Any, **params: Any) -> list[list[float]]:
        """One vector per input (a text or a list of texts)."""
        answer = self._json("POST", "/embeddings", {"input": inputs, **params})
        return [item["embedding"] for item in sorted(answer["data"], key=lambda d: d["index"])]

    def models(self) -> list[str]:
        return [m["id"] for m in self._json("GET", "/models")["data"]]


__all__ = ["Llm", "LlmError"]
