"""Frames of the bus-over-a-socket protocol (:mod:`apiary.bus.remote` ⇄ :mod:`apiary.bus.serve`).

A frame is two big-endian u32 lengths — the head's and the body's — then the head, a JSON array
whose first item names the operation, then the body (a message's bytes, or several messages'
bytes back to back). Writes are gathered: everything sent during one turn of the event loop goes
out in one ``writelines``, so a burst of acks and deliveries costs one system call, not one each.

Operations, client → server (``seq`` is answered by ``ok``/``err`` with the same number):

* ``["p", seq, [[subject, msg_id, headers, size], …]]`` + bodies — publish_many
* ``["s", seq, sid, subject, group, max_in_flight, ack_wait]`` — subscribe
* ``["x", seq, sid]`` — drain the subscription (unsettled deliveries go back)
* ``["g", seq, subject, group]`` — remove_group
* ``["a"|"t"|"w"|"f", did]`` and ``["n", did, delay]`` — ack, term, in_progress, forget (the
  client's copy expired; the server's expired too), nak

server → client: ``["d", sid, did, subject, msg_id, headers, num_delivered]`` + body — a
delivery; ``["ok", seq]``; ``["err", seq, kind, message]``.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any

import orjson

MAX_FRAME = 64 * 1024 * 1024
"""Largest head + body accepted; a bigger length means a broken peer, and the connection ends."""

_LENGTHS = struct.Struct(">II")


class WireError(Exception):
    """The peer sent something that is not a frame of this protocol."""


def frame(head: list[Any], body: bytes = b"") -> bytes:
    h = orjson.dumps(head)
    return _LENGTHS.pack(len(h), len(body)) + h + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[list[Any], bytes] | None:
    """The next frame, or None at a clean end of stream."""
    try:
        lengths = await reader.readexactly(8)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise WireError("the stream ended inside a frame") from None
        return None
    head_len, body_len = _LENGTHS.unpack(lengths)
    if head_len + body_len > MAX_FRAME:
        raise WireError(f"a frame of {head_len + body_len} bytes is over {MAX_FRAME}")
    try:
        raw = await reader.readexactly(head_len + body_len)
    except asyncio.IncompleteReadError:
        raise WireError("the stream ended inside a frame") from None
    try:
        head = orjson.loads(raw[:head_len])
    except orjson.JSONDecodeError as exc:
        raise WireError(f"a frame head is not JSON: {exc}") from None
    if not isinstance(head, list) or not head or not isinstance(head[0], str):
        raise WireError("a frame head is not an operation")
    return head, raw[head_len:]


class Outbox:
    """Frames to send, flushed once per event-loop turn."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._frames: list[bytes] = []
        self._loop = asyncio.get_running_loop()
        self.closed = False

    def send(self, head: list[Any], body: bytes = b"") -> None:
        if self.closed:
            return
        if not self._frames:
            self._loop.call_soon(self._flush)
        self._frames.append(frame(head, body))

    def _flush(self) -> None:
        frames, self._frames = self._frames, []
        if frames and not self.closed and not self._writer.is_closing():
            self._writer.writelines(frames)

    async def close(self) -> None:
        self._flush()
        self.closed = True
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass


__all__ = ["MAX_FRAME", "Outbox", "WireError", "frame", "read_frame"]
