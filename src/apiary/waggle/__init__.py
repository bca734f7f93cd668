"""Waggle, the message protocol between Apiary and its agents (DESIGN §5).

A pure model package: it imports nothing of Apiary, so the SDK inside an agent process, the keeper,
the router and the API can all share it.

The JSON codec (orjson) and the output-parsing rules are loaded on first use: importing orjson
costs ~20 ms, and an agent built on the SDK needs only :class:`Message` (it uses the stdlib json
module, see :mod:`apiary.agent.runtime`) — agent cold start is part of every drone start.
"""

from __future__ import annotations

from apiary.waggle.message import (
    REPLY,
    REPLY_OPTIONAL,
    TYPES,
    VERSION,
    WIRE_FIELDS,
    InvalidMessage,
    Message,
    Usage,
    looks_like_waggle,
    new_id,
    now_rfc3339,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from apiary.waggle.codec import decode, dumps, encode, encode_line, loads
    from apiary.waggle.output import output_from_json, output_from_text, parse_output_line

_LAZY = {
    "decode": "apiary.waggle.codec",
    "dumps": "apiary.waggle.codec",
    "encode": "apiary.waggle.codec",
    "encode_line": "apiary.waggle.codec",
    "loads": "apiary.waggle.codec",
    "output_from_json": "apiary.waggle.output",
    "output_from_text": "apiary.waggle.output",
    "parse_output_line": "apiary.waggle.output",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'apiary.waggle' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "REPLY",
    "REPLY_OPTIONAL",
    "TYPES",
    "VERSION",
    "WIRE_FIELDS",
    "InvalidMessage",
    "Message",
    "Usage",
    "decode",
    "dumps",
    "encode",
    "encode_line",
    "loads",
    "looks_like_waggle",
    "new_id",
    "now_rfc3339",
    "output_from_json",
    "output_from_text",
    "parse_output_line",
]
