"""Typed session events: what a client's UI wants to hear, derived from the journal.

The raw stream (``…/stream``) sends one event per journal entry, named by its kind. A client that
renders a conversation wants to know *what happened* instead — a stage started, an agent wrote a
partial line, a gate waits for a human, tokens were spent, the answer is out — without knowing
the journal's vocabulary. ``…/stream?events=typed`` sends these, one or more per entry:

========================= ======================================================================
``session.input``         an input was accepted (``payload``)
``stage.started``         a dispatch to ``stage`` went out (``dispatch``)
``message.delta``         a partial agent line (``metadata.partial`` or ``more`` = "true")
``stage.completed``       the stage's answer to a dispatch (``payload``, ``latencyMs``, ``drone``)
``approval.requested``    a dispatch to ``stage`` is held for a human
``approval.granted``      it was approved and sent
``budget.updated``        tokens were spent (this entry's and the session's running total, with
                          ``costUsd`` when the tokens' models have a price)
``session.completed``     an input's flow ended with its final answer (``input``, ``payload``)
``session.failed``        an input's flow failed (``input``, ``reason``, ``message``)
``tool.called``           an agent's MCP tool call through its keeper (server, tool, arguments,
                          result, isError, latencyMs)
``session.event``         any other note the router wrote (retries, dead letters …)
========================= ======================================================================

Each event's id is ``SEQ.I`` — the entry's journal seq and the event's index among that entry's
events — so ``Last-Event-ID`` resumes exactly after the last event a client saw, from the
journal: across a disconnect and across an apiaryd restart alike. A plain ``SEQ`` (what the raw
stream sends) resumes after that whole entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from apiary.api.session_messages import rfc3339
from apiary.errors import BadRequest
from apiary.journal import Entry, Journal
from apiary.telemetry.prices import usd

Obj = dict[str, Any]

TYPED = "typed"
"""The value of ``events=`` that asks for typed events."""


@dataclass(frozen=True)
class Position:
    """Where a client stands: after entry ``seq``'s event ``index`` (None: after all of it)."""

    seq: int
    index: int | None = None

    @property
    def read_after(self) -> int:
        """The seq to read entries after, so the entry still partly unsent is read again."""
        return self.seq if self.index is None else max(self.seq - 1, 0)

    def wants(self, seq: int, index: int) -> bool:
        return seq > self.seq or (seq == self.seq and self.index is not None and index > self.index)

    @classmethod
    def parse(cls, raw: str, field: str = "Last-Event-ID") -> Position:
        text = raw.strip()
        head, dot, tail = text.partition(".")
        try:
            seq = int(head)
            index = int(tail) if dot else None
        except ValueError:
            raise BadRequest(
                f"{field} {raw!r}: expected an event id (SEQ or SEQ.INDEX, as sent)"
            ) from None
        if seq < 0 or (index is not None and index < 0):
            raise BadRequest(f"{field} {raw!r}: must not be negative")
        return cls(seq, index)


@dataclass(frozen=True)
class TypedEvent:
    id: str
    type: str
    data: Obj


def is_partial(message: Obj) -> bool:
    metadata = message.get("metadata") or {}
    return metadata.get("partial") == "true" or metadata.get("more") == "true"


class Typer:
    """Turns entries into typed events, in order; keeps the session's running token totals."""

    def __init__(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.cost_usd = 0.0

    @classmethod
    async def resuming(cls, journal: Journal, key: str, after: int) -> Typer:
        """A typer whose totals are those of the entries up to ``after`` (a resumed stream)."""
        typer = cls()
        seen = 0
        while seen < after:
            page = await journal.read(key, seen, limit=10_000)
            for e in page:
                if e.seq > after:
                    return typer
                typer.prompt_tokens += e.prompt_tokens
                typer.completion_tokens += e.completion_tokens
                typer.cost_usd += e.cost_usd
            if len(page) < 10_000:
                break
            seen = page[-1].seq
        return typer

    def events(self, e: Entry) -> list[TypedEvent]:
        found = [(kind, {**_base(e), **body}) for kind, body in _kinds(e)]
        if e.prompt_tokens or e.completion_tokens:
            self.prompt_tokens += e.prompt_tokens
            self.completion_tokens += e.completion_tokens
            self.cost_usd += e.cost_usd
            found.append(("budget.updated", {**_base(e), **self.usage(e)}))
        return [TypedEvent(f"{e.seq}.{i}", kind, {"type": kind, "id": f"{e.seq}.{i}", **data})
                for i, (kind, data) in enumerate(found)]  # fmt: skip

    def usage(self, e: Entry) -> Obj:
        total: Obj = {
            "promptTokens": self.prompt_tokens,
            "completionTokens": self.completion_tokens,
        }
        delta: Obj = {"promptTokens": e.prompt_tokens, "completionTokens": e.completion_tokens}
        if e.cost_usd > 0:
            delta["costUsd"] = usd(e.cost_usd)
        if self.cost_usd > 0:
            total["costUsd"] = usd(self.cost_usd)
        return {"usage": delta, "total": total}


def _base(e: Entry) -> Obj:
    return {"seq": e.seq, "entry": e.id, "stage": e.stage, "created": rfc3339(e.created)}


def _kinds(e: Entry) -> list[tuple[str, Obj]]:
    m = e.message
    payload = m.get("payload")
    if e.kind == "input":
        return [("session.input", {"payload": payload, "metadata": m.get("metadata") or {}})]
    if e.kind == "dispatch":
        return [("stage.started", {"dispatch": e.id, "parent": e.parent})]
    if e.kind == "output":
        if is_partial(m):
            return [("message.delta", {"dispatch": e.parent, "payload": payload,
                                       "metadata": {**(m.get("metadata") or {}),
                                                    "partial": "true"}})]  # fmt: skip
        return [("stage.completed", {"dispatch": e.parent, "payload": payload,
                                     "latencyMs": e.latency_ms, "drone": e.drone})]  # fmt: skip
    if e.kind == "final":
        return [("session.completed", {"input": e.parent, "payload": payload})]
    if e.kind == "error":
        body = payload if isinstance(payload, dict) else {"message": payload}
        return [("session.failed", {"input": m.get("correlationId") or e.parent,
                                    "reason": body.get("reason"),
                                    "message": body.get("message")})]  # fmt: skip
    note = payload if isinstance(payload, dict) else {}
    if note.get("held") == "approval":
        return [("approval.requested", {"dispatch": e.parent})]
    if "approved" in note:
        return [("approval.granted", {"dispatch": e.parent})]
    if isinstance(note.get("toolCall"), dict):
        return [("tool.called", {"drone": e.drone, "latencyMs": e.latency_ms, **note["toolCall"]})]
    return [
        ("session.event", {"parent": e.parent, "payload": payload, "messageType": m.get("type")})
    ]


def events_param(raw: str | None) -> bool:
    """``events=typed`` → True; absent or ``entries`` → False (the raw stream)."""
    if raw is None or raw in ("", "entries"):
        return False
    if raw == TYPED:
        return True
    raise BadRequest(f"query parameter events={raw!r}: expected 'typed' or 'entries'")


def position(last_event_id: str | None, after: str | None) -> Position:
    """Where a typed stream resumes: ``Last-Event-ID`` wins over ``after``; default the start."""
    if last_event_id and last_event_id.strip():
        return Position.parse(last_event_id)
    if after:
        return Position.parse(after, "query parameter after")
    return Position(0)


def typed_position(request: Request) -> Position:
    return position(request.headers.get("last-event-id"), request.query_params.get("after"))
