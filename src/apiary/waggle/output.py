"""How an agent's output line becomes a Waggle message (DESIGN §5).

* A JSON object with a ``payload`` key and a ``type`` or ``version`` key is a Waggle message and is
  taken as is — validated strictly, so a malformed one is an error naming the field rather than a
  silently mangled payload. Its ``correlationId`` (and ``sessionId``, ``traceparent``) default to
  those of the message it answers.
* Any other JSON value becomes the ``payload`` of a ``result`` answering that message.
* A line that is not JSON becomes a string payload (so ``echo hello`` is a perfectly good agent).
"""

from __future__ import annotations

from typing import Any

import orjson

from apiary.waggle.message import Message, looks_like_waggle


def _answer(payload: Any, answering: Message | None) -> Message:
    if answering is None:
        return Message(payload, "result")
    return Message(
        payload,
        "result",
        correlation_id=answering.id,
        session_id=answering.session_id,
        traceparent=answering.traceparent,
    )


def output_from_json(value: Any, answering: Message | None) -> Message:
    """An output from an already-decoded JSON value (Waggle message or bare payload)."""
    if not looks_like_waggle(value):
        return _answer(value, answering)
    msg = Message.from_dict(value, default_type="result")
    if answering is not None:
        if msg.correlation_id is None:
            msg.correlation_id = answering.id
        if msg.session_id is None:
            msg.session_id = answering.session_id
        if msg.traceparent is None:
            msg.traceparent = answering.traceparent
    return msg


def output_from_text(text: str, answering: Message | None) -> Message:
    """An output whose payload is a plain string."""
    return _answer(text, answering)


def parse_output_line(line: bytes | str, answering: Message | None) -> Message:
    """One stdout line of an agent → the output message answering ``answering``.

    ``answering`` may be None for a line that answers nothing (it then carries no correlationId).
    Raises :class:`~apiary.waggle.message.InvalidMessage` only for a malformed Waggle object.
    """
    line = line.rstrip("\r\n") if isinstance(line, str) else line.rstrip(b"\r\n")
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        text = line if isinstance(line, str) else line.decode("utf-8", "replace")
        return output_from_text(text, answering)
    return output_from_json(value, answering)
