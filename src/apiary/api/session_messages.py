"""What clients send to a session and what they read back: message bodies, journal entries, and
the query parameters of the read routes.

Everything a client can get wrong is a 4xx naming the field here (``payload``, ``metadata.lang``,
``after``), checked before anything is journaled: a message the router accepts is always one the
agents can be handed.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.datastructures import QueryParams

from apiary.errors import BadRequest, FieldDetail, Invalid, PayloadTooLarge
from apiary.journal import Entry
from apiary.telemetry.prices import usd
from apiary.waggle import InvalidMessage, Message

MESSAGE_FIELDS = frozenset({"payload", "type", "metadata", "id", "correlationId", "traceparent"})
"""What a client may set on an input; the rest (timestamp, session, usage) is the server's."""

MAX_WAIT = 60.0
"""Longest a long-poll holds a request (seconds); a longer ``wait`` is clamped to this."""

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


def invalid(field: str, message: str) -> Invalid:
    return Invalid(f"{field}: {message}", [FieldDetail(field, message)])


def check_size(payload: Any, limit: int, field: str = "payload") -> None:
    """Refuse a payload whose JSON encoding is over ``limit`` bytes (413 naming the field)."""
    try:
        size = len(orjson.dumps(payload))
    except TypeError as exc:  # cannot happen for parsed JSON; kept for programmatic callers
        raise invalid(field, f"must be JSON ({exc})") from None
    if size > limit:
        raise PayloadTooLarge(
            f"{field} is {size} bytes, over the message limit of {limit} bytes",
            [FieldDetail(field, f"{size} bytes > {limit}")],
        )


def parse_message(body: dict[str, Any], limit: int, *, default_type: str = "task") -> Message:
    """A client's input body → a Waggle message (fresh id unless the client chose one)."""
    unknown = sorted(k for k in body if k not in MESSAGE_FIELDS)
    if unknown:
        allowed = ", ".join(sorted(MESSAGE_FIELDS))
        raise Invalid(
            f"unknown field(s) {', '.join(unknown)} (a message has {allowed})",
            [FieldDetail(k, "unknown field") for k in unknown],
        )
    if "payload" not in body:
        raise invalid("payload", "required (any JSON value, null included)")
    check_size(body["payload"], limit)
    try:
        return Message.from_dict(body, default_type=default_type)
    except InvalidMessage as exc:
        raise invalid(exc.field or "message", exc.message) from None


def rfc3339(epoch: float) -> str:
    ms = min(int((epoch - int(epoch)) * 1000), 999)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(epoch))) + f".{ms:03d}Z"


def entry_dict(e: Entry) -> dict[str, Any]:
    """One journal entry as the API shows it (transcript rows, long-poll items, SSE data).

    ``usageByModel`` (the hop's tokens by the model that answered, as the gateway counted them)
    and ``costUsd`` (their estimated cost) only when the hop had them."""
    out = {
        "seq": e.seq,
        "id": e.id,
        "kind": e.kind,
        "stage": e.stage,
        "parent": e.parent,
        "drone": e.drone,
        "latencyMs": e.latency_ms,
        "usage": {"promptTokens": e.prompt_tokens, "completionTokens": e.completion_tokens},
        "created": rfc3339(e.created),
        "message": e.message,
    }
    if e.models:
        out["usageByModel"] = {
            m: {"promptTokens": p, "completionTokens": c} for m, p, c in e.models
        }
    if e.cost_usd > 0:
        out["costUsd"] = usd(e.cost_usd)
    return out


def _int_param(q: QueryParams, name: str, default: int, low: int, high: int | None) -> int:
    raw = q.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name}={raw!r}: expected an integer") from None
    if value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"≥ {low}"
        raise BadRequest(f"query parameter {name}={raw!r}: must be {span}")
    return value


def after_param(q: QueryParams, last_event_id: str | None = None) -> int:
    """``after`` (default 0); for SSE a ``Last-Event-ID`` header wins, so a reconnect resumes."""
    if last_event_id:
        try:
            value = int(last_event_id.strip())
        except ValueError:
            raise BadRequest(
                f"Last-Event-ID {last_event_id!r}: expected a sequence number"
            ) from None
        if value >= 0:
            return value
    return _int_param(q, "after", 0, 0, None)


def limit_param(q: QueryParams) -> int:
    return _int_param(q, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)


def wait_param(q: QueryParams) -> float:
    """``wait`` seconds (default 0: answer at once), clamped to :data:`MAX_WAIT`."""
    raw = q.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw.rstrip("s"))
    except ValueError:
        raise BadRequest(f"query parameter wait={raw!r}: expected seconds, e.g. 30") from None
    if not value >= 0 or value == float("inf"):
        raise BadRequest(f"query parameter wait={raw!r}: must be a number of seconds ≥ 0")
    return min(value, MAX_WAIT)
