"""``GET …/sessions/{name}/stream``: the transcript as Server-Sent Events, live.

One event per journal entry: ``id:`` is the entry's seq (a browser's EventSource sends it back as
``Last-Event-ID`` when it reconnects, so the stream resumes without a gap or a repeat), ``event:``
its kind, ``data:`` the entry as JSON on one line. The stream ends when the session can say no
more — closed or finished, or for a job once its answer (or failure) is out — when the client
leaves, or when the server shuts down. Idle streams get a comment line every
``bookmark_interval`` seconds so proxies keep them open.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
from starlette.responses import StreamingResponse

from apiary.api.session_messages import entry_dict
from apiary.api.session_ops import FINISHED_KINDS, SessionOps, session_key
from apiary.errors import NotFound
from apiary.journal import Entry

EVENT_STREAM = "text/event-stream"

CHECK_INTERVAL = 1.0
"""Seconds between checks whether the session ended (and shutdown) while nothing is written."""


def sse_event(e: Entry) -> bytes:
    data = orjson.dumps(entry_dict(e))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (e.seq, e.kind.encode(), data)


async def stream_response(ops: SessionOps, cell: str, name: str, after: int) -> StreamingResponse:
    info = await ops.info(cell, name)  # 404 before the stream starts
    _ = ops.journal  # 503 before the stream starts when there is no journal
    return StreamingResponse(
        _events(ops, cell, name, after, info.job),
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    ops: SessionOps, cell: str, name: str, after: int, job: bool
) -> AsyncIterator[bytes]:
    key = session_key(cell, name)
    journal = ops.journal
    stopping = ops.state.stopping
    keepalive = ops.state.config.bookmark_interval
    yield b"retry: 1000\n\n"
    quiet_since = time.monotonic()
    while not stopping.is_set():
        entries = await journal.wait(key, after, min(CHECK_INTERVAL, keepalive))
        if entries:
            after = entries[-1].seq
            quiet_since = time.monotonic()
            yield b"".join(sse_event(e) for e in entries)
            if job and any(e.kind in FINISHED_KINDS for e in entries):
                return
            continue
        try:
            info = await ops.info(cell, name)
        except NotFound:
            return
        if not info.open:  # ended: send what was written meanwhile, then stop
            rest = await journal.read(key, after, limit=10_000)
            if rest:
                yield b"".join(sse_event(e) for e in rest)
            return
        if time.monotonic() - quiet_since >= keepalive:
            quiet_since = time.monotonic()
            yield b": keepalive\n\n"
