"""Agent interfaces the keeper speaks: ``stdin`` (waggle or text format) and ``http``."""

from __future__ import annotations

from apiary.node.interfaces.base import Channel, UnsolicitedHook
from apiary.node.interfaces.config import InterfaceConfig
from apiary.node.interfaces.errors import (
    AgentCrashed,
    AgentNotReady,
    AgentProtocolError,
    DeliveryCancelled,
    ResponseTimeout,
)
from apiary.node.interfaces.http import HttpChannel, parse_http_body
from apiary.node.interfaces.stdio import StdioChannel, escape_text, unescape_text

__all__ = [
    "AgentCrashed",
    "AgentNotReady",
    "AgentProtocolError",
    "Channel",
    "DeliveryCancelled",
    "HttpChannel",
    "InterfaceConfig",
    "ResponseTimeout",
    "StdioChannel",
    "UnsolicitedHook",
    "escape_text",
    "parse_http_body",
    "unescape_text",
]
