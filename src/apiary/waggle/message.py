"""The Waggle message (DESIGN §5): one JSON object per message, on every hop of every message.

Because this class sits on the hot path of every message (the keeper decodes and encodes each one,
the SDK does the same inside the agent), it is a plain ``__slots__`` class with hand-written
``to_dict``/``from_dict`` rather than a pydantic model: measured on this machine the hand-written
pair decodes + validates + re-encodes a typical message about 3x faster than pydantic v2 (see
docs/waggle.md for the figures), and — just as important for agent cold start — it imports no
heavier module than ``os`` and ``time`` (no ``dataclasses``→``inspect``, no ``uuid``→``platform``).

Wire names are camelCase (``correlationId``); Python attributes are snake_case.
"""

from __future__ import annotations

import itertools
import os
import re
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs an agent ~10 ms
if TYPE_CHECKING:
    from typing import Any

VERSION = "1.0"
TYPES = frozenset({"task", "result", "request", "response", "event", "error"})

#: Every key a Waggle message may carry on the wire.
WIRE_FIELDS = frozenset(
    {
        "id",
        "version",
        "type",
        "payload",
        "metadata",
        "timestamp",
        "sourceAgentId",
        "destAgentId",
        "sessionId",
        "correlationId",
        "traceparent",
        "usage",
    }
)


REPLY = "reply"
"""Metadata key the engine sets on a message that needs no answer (see Message.reply_optional)."""
REPLY_OPTIONAL = "optional"


def looks_like_waggle(value: Any) -> bool:
    """Whether a decoded JSON value is meant as a Waggle message rather than a bare payload:
    an object with a ``payload`` key and a ``type`` or ``version`` key."""
    return (
        isinstance(value, dict) and "payload" in value and ("type" in value or "version" in value)
    )


class InvalidMessage(ValueError):
    """A message failed validation; ``field`` names the wire field (``usage.promptTokens``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


_id_prefix = ""
_id_count = itertools.count()


def _draw_id_prefix() -> None:
    """A fresh random prefix for this process (and again in a forked child, which would
    otherwise repeat its parent's ids)."""
    global _id_prefix, _id_count
    b = bytearray(os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    _id_prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
    _id_count = itertools.count()


_draw_id_prefix()
os.register_at_fork(after_in_child=_draw_id_prefix)


def new_id() -> str:
    """A version 4 UUID string: 74 random bits drawn once per process, then a 48-bit counter.

    Every message gets one, so it is on the hot path: a counter costs a fraction of the
    ``os.urandom`` system call per id it replaces. Still unique across processes and restarts
    (each process, and each forked child, draws its own prefix; two processes share one with
    probability ~2^-74) and the shape of a UUID4 (version and variant bits set). Ids are
    idempotency keys, not secrets: that the next one is predictable grants nothing.
    """
    n = next(_id_count)
    if n >= 1 << 48:  # 2.8e14 ids later: start a new prefix rather than wrap
        _draw_id_prefix()
        n = next(_id_count)
    return f"{_id_prefix}{n:012x}"


_ts_second = -1
_ts_prefix = ""


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with milliseconds; the second-prefix is cached."""
    global _ts_second, _ts_prefix
    t = time.time()
    sec = int(t)
    if sec != _ts_second:
        _ts_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _ts_second = sec
    return f"{_ts_prefix}.{int((t - sec) * 1000):03d}Z"


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})", re.ASCII
).fullmatch


def _valid_timestamp(ts: str) -> bool:
    """RFC 3339 shape check (a compiled regex: ~4x cheaper than datetime parsing)."""
    return _RFC3339(ts) is not None


class Usage:
    """Tokens an agent spent on one output; budgets count :attr:`total`."""

    __slots__ = ("completion_tokens", "prompt_tokens")

    def __init__(self, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {"promptTokens": self.prompt_tokens, "completionTokens": self.completion_tokens}

    @classmethod
    def from_dict(cls, data: Any, field: str = "usage") -> Usage:
        if not isinstance(data, dict):
            raise InvalidMessage(field, "must be an object with promptTokens and completionTokens")
        values = []
        for key in ("promptTokens", "completionTokens"):
            v = data.get(key, 0)
            if type(v) is not int or v < 0:
                raise InvalidMessage(f"{field}.{key}", "must be a non-negative integer")
            values.append(v)
        unknown = set(data) - {"promptTokens", "completionTokens"}
        if unknown:
            raise InvalidMessage(f"{field}.{sorted(unknown)[0]}", "unknown field")
        return cls(values[0], values[1])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Usage)
            and other.prompt_tokens == self.prompt_tokens
            and other.completion_tokens == self.completion_tokens
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Usage(prompt_tokens={self.prompt_tokens}, completion_tokens={self.completion_tokens})"
        )


class Message:
    """One Waggle message. Construct freely; :meth:`from_dict` validates wire input."""

    __slots__ = (
        "correlation_id",
        "dest_agent_id",
        "id",
        "metadata",
        "payload",
        "session_id",
        "source_agent_id",
        "timestamp",
        "traceparent",
        "type",
        "usage",
        "version",
    )

    def __init__(
        self,
        payload: Any = None,
        type: str = "task",
        *,
        id: str | None = None,
        version: str = VERSION,
        metadata: dict[str, str] | None = None,
        timestamp: str | None = None,
        source_agent_id: str | None = None,
        dest_agent_id: str | None = None,
        session_id: str | None = None,
        correlation_id: str | None = None,
        traceparent: str | None = None,
        usage: Usage | None = None,
    ) -> None:
        if type not in TYPES:
            raise InvalidMessage("type", f"must be one of {', '.join(sorted(TYPES))}, not {type!r}")
        self.payload = payload
        self.type = type
        self.id = id or new_id()
        self.version = version
        self.metadata = {} if metadata is None else metadata
        self.timestamp = timestamp or now_rfc3339()
        self.source_agent_id = source_agent_id
        self.dest_agent_id = dest_agent_id
        self.session_id = session_id
        self.correlation_id = correlation_id
        self.traceparent = traceparent
        if usage is None and "token-count" in self.metadata:
            usage = _usage_from_token_count(self.metadata["token-count"])
        self.usage = usage

    # -- wire form -------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The wire form; absent optional fields are omitted, not sent as null."""
        d: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "type": self.type,
            "payload": self.payload,
            "metadata": self.metadata,
            "timestamp": self.timestamp,
        }
        if self.source_agent_id is not None:
            d["sourceAgentId"] = self.source_agent_id
        if self.dest_agent_id is not None:
            d["destAgentId"] = self.dest_agent_id
        if self.session_id is not None:
            d["sessionId"] = self.session_id
        if self.correlation_id is not None:
            d["correlationId"] = self.correlation_id
        if self.traceparent is not None:
            d["traceparent"] = self.traceparent
        if self.usage is not None:
            d["usage"] = self.usage.to_dict()
        return d

    @classmethod
    def from_dict(cls, data: Any, *, default_type: str = "task") -> Message:
        """Validate a decoded wire object. Missing ``id``/``timestamp`` are generated, a missing
        ``type`` is ``default_type``; every error names its field; unknown keys are rejected."""
        if not isinstance(data, dict):
            raise InvalidMessage("", "a Waggle message must be a JSON object")
        if not WIRE_FIELDS.issuperset(data):
            unknown = sorted(str(k) for k in data if k not in WIRE_FIELDS)
            raise InvalidMessage(unknown[0], "unknown field")
        msg = cls.__new__(cls)
        v = data.get("id")
        if v is None:
            v = new_id()
        elif type(v) is not str or not v:
            raise InvalidMessage("id", "must be a non-empty string")
        msg.id = v
        v = data.get("version", VERSION)
        if v != VERSION and not (type(v) is str and v.startswith("1.")):
            raise InvalidMessage("version", f"unsupported version {v!r} (this is Waggle {VERSION})")
        msg.version = v
        v = data.get("type", default_type)
        if v not in TYPES:
            raise InvalidMessage("type", f"must be one of {', '.join(sorted(TYPES))}, not {v!r}")
        msg.type = v
        msg.payload = data.get("payload")
        v = data.get("metadata")
        if v is None:
            v = {}
        elif type(v) is not dict:
            raise InvalidMessage("metadata", "must be an object of string values")
        elif v:
            for mk, mv in v.items():
                if type(mv) is not str:
                    raise InvalidMessage(f"metadata.{mk}", "must be a string")
        msg.metadata = v
        v = data.get("timestamp")
        if v is None:
            v = now_rfc3339()
        elif type(v) is not str or not _valid_timestamp(v):
            raise InvalidMessage("timestamp", f"must be an RFC 3339 date-time, not {v!r}")
        msg.timestamp = v
        get = data.get
        msg.source_agent_id = _opt_str(get("sourceAgentId"), "sourceAgentId")
        msg.dest_agent_id = _opt_str(get("destAgentId"), "destAgentId")
        msg.session_id = _opt_str(get("sessionId"), "sessionId")
        msg.correlation_id = _opt_str(get("correlationId"), "correlationId")
        msg.traceparent = _opt_str(get("traceparent"), "traceparent")
        v = data.get("usage")
        if v is not None:
            msg.usage = Usage.from_dict(v)
        elif "token-count" in msg.metadata:
            msg.usage = _usage_from_token_count(msg.metadata["token-count"])
        else:
            msg.usage = None
        return msg

    # -- conveniences ----------------------------------------------------------------------------

    def reply(self, payload: Any = None, type: str = "result", **fields: Any) -> Message:
        """An output answering this message: correlated to it, same session and trace."""
        fields.setdefault("correlation_id", self.id)
        fields.setdefault("session_id", self.session_id)
        fields.setdefault("traceparent", self.traceparent)
        return Message(payload, type, **fields)

    @property
    def more(self) -> bool:
        """True when the agent announced further outputs for the same input (``metadata.more``,
        or ``metadata.partial``: a partial line a client sees as ``message.delta``)."""
        return self.metadata.get("more") == "true" or self.metadata.get("partial") == "true"

    @property
    def reply_optional(self) -> bool:
        """True when Apiary expects no answer to this message (``metadata.reply: optional``): a
        worker's result reaching its supervisor while other tasks are still out. An agent may
        still print lines for it; they are routed like any other (docs/waggle.md, "Turns")."""
        return self.metadata.get(REPLY) == REPLY_OPTIONAL

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return all(getattr(self, s) == getattr(other, s) for s in Message.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        extra = "".join(
            f", {s}={getattr(self, s)!r}"
            for s in ("correlation_id", "session_id", "dest_agent_id")
            if getattr(self, s) is not None
        )
        return f"Message(type={self.type!r}, id={self.id!r}, payload={self.payload!r}{extra})"


def _opt_str(v: Any, field: str) -> str | None:
    if v is None or type(v) is str:
        return v  # type: ignore[no-any-return]
    raise InvalidMessage(field, "must be a string")


def _usage_from_token_count(raw: str) -> Usage:
    """The seeds' ``metadata["token-count"]``: a total with no split, counted as completion."""
    try:
        n = int(raw)
    except ValueError:
        raise InvalidMessage("metadata.token-count", "must be a non-negative integer") from None
    if n < 0:
        raise InvalidMessage("metadata.token-count", "must be a non-negative integer")
    return Usage(0, n)
