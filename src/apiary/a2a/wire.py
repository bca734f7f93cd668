"""A2A's wire shapes (ProtoJSON of a2a.proto v1.0) as Apiary needs them: parts ↔ payloads,
messages, JSON-RPC envelopes and errors.

A payload travels as one part: a string as a ``text`` part, any other JSON as a ``data`` part;
an A2A message of one text or data part becomes that payload, several parts a list of them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from apiary.errors import ApiaryError, Conflict, Forbidden, Invalid, NotFound, Unavailable

Obj = dict[str, Any]

PROTOCOL_VERSION = "1.0"
VERSION_HEADER = "A2A-Version"
EVENT_ID = "apiary.io/event-id"
"""Metadata key on every streamed object: its event id, for ``Last-Event-ID`` on a resubscribe."""

TASK_NOT_FOUND = -32001
TASK_NOT_CANCELABLE = -32002
UNSUPPORTED_OPERATION = -32004
VERSION_NOT_SUPPORTED = -32009
INVALID_PARAMS = -32602
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
PARSE_ERROR = -32700
INTERNAL_ERROR = -32603


class RpcError(Exception):
    """A JSON-RPC error answer: ``code`` and a message that names the field or the cause."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def rpc_error_of(exc: ApiaryError) -> RpcError:
    """Apiary's errors in A2A's codes (a missing session is a missing task)."""
    if isinstance(exc, NotFound):
        return RpcError(TASK_NOT_FOUND, exc.message)
    if isinstance(exc, Invalid | Conflict):
        return RpcError(INVALID_PARAMS, exc.message)
    if isinstance(exc, Unavailable):
        return RpcError(UNSUPPORTED_OPERATION, exc.message)
    if isinstance(exc, Forbidden):
        return RpcError(INVALID_REQUEST, exc.message)
    return RpcError(INVALID_PARAMS if exc.status < 500 else INTERNAL_ERROR, exc.message)


def result(rpc_id: Any, value: Obj) -> Obj:
    return {"jsonrpc": "2.0", "id": rpc_id, "result": value}


def error(rpc_id: Any, err: RpcError) -> Obj:
    return {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": err.code, "message": err.message}}


def now_rfc3339() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def parts_of(payload: Any) -> list[Obj]:
    if isinstance(payload, str):
        return [{"text": payload}]
    return [{"data": payload, "mediaType": "application/json"}]


def payload_of(message: Obj, field: str = "params.message") -> Any:
    """The payload an A2A message carries (422-style RPC error naming the part otherwise)."""
    parts = message.get("parts")
    if not isinstance(parts, list) or not parts:
        raise RpcError(INVALID_PARAMS, f"{field}.parts: required, at least one part")
    values = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise RpcError(INVALID_PARAMS, f"{field}.parts[{i}]: must be an object")
        if "text" in part:
            values.append(part["text"])
        elif "data" in part:
            values.append(part["data"])
        else:
            raise RpcError(INVALID_PARAMS, f"{field}.parts[{i}]: only text and data parts are "
                                           "understood (no files or urls)")  # fmt: skip
    return values[0] if len(values) == 1 else values


def agent_message(payload: Any, task: str, context: str, metadata: Obj | None = None) -> Obj:
    message: Obj = {"messageId": str(uuid.uuid4()), "role": "ROLE_AGENT", "taskId": task,
                    "contextId": context, "parts": parts_of(payload)}  # fmt: skip
    if metadata:
        message["metadata"] = metadata
    return message


def user_message(payload: Any, task: str, context: str, message_id: str) -> Obj:
    return {"messageId": message_id, "role": "ROLE_USER", "taskId": task,
            "contextId": context, "parts": parts_of(payload)}  # fmt: skip
