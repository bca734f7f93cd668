"""Encoding and decoding Waggle messages with orjson (the hot path of every hop).

orjson is several times faster than the stdlib ``json`` module at both ends and emits compact
UTF-8 bytes that never contain a raw newline, so one message is always exactly one line.
"""

from __future__ import annotations

from typing import Any

import orjson

from apiary.waggle.message import InvalidMessage, Message

_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE


def loads(data: bytes | bytearray | memoryview | str) -> Any:
    """Parse JSON; a syntax error is a :class:`ValueError` (``orjson.JSONDecodeError``)."""
    return orjson.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact JSON; a value JSON cannot carry raises :class:`InvalidMessage` naming ``payload``."""
    try:
        return orjson.dumps(obj)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise InvalidMessage("payload", f"not JSON-serialisable: {exc}") from None


def encode(msg: Message) -> bytes:
    """The message as compact JSON bytes."""
    try:
        return orjson.dumps(msg.to_dict())
    except TypeError as exc:
        raise InvalidMessage("payload", f"not JSON-serialisable: {exc}") from None


def encode_line(msg: Message) -> bytes:
    """The message as one newline-terminated line (the stdin wire format)."""
    try:
        return orjson.dumps(msg.to_dict(), option=_APPEND_NEWLINE)
    except TypeError as exc:
        raise InvalidMessage("payload", f"not JSON-serialisable: {exc}") from None


def decode(data: bytes | bytearray | memoryview | str, *, default_type: str = "task") -> Message:
    """Parse and validate one message; errors are :class:`InvalidMessage` naming the field."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage("", f"not valid JSON: {exc}") from None
    return Message.from_dict(obj, default_type=default_type)
