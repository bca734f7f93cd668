"""``GET …/sessions/{name}/stream``: the transcript as Server-Sent Events, live.

One event per journal entry: ``id:`` is the entry's seq (a browser's EventSource sends it back as
``Last-Event-ID`` when it reconnects, so the stream resumes without a gap or a repeat), ``event:``
its kind, ``data:`` the entry as JSON on one line. The stream ends when the session can say no
more — closed or finished, or for a job once its answer (or failure) is out — when the client
leaves, or when the server shuts down. Idle streams get a comment line every
``bookmark_interval`` seconds so proxies keep them open.

A stream can outlive its token, as a watch can: every :data:`~apiary.api.watch.REAUTH_SECONDS`
it checks the token again, and once the token is revoked or expired it ends with an
``event: error`` whose data is the API's error body (401 and why).

With ``events=typed`` the same entries are sent as typed events instead
(:mod:`apiary.api.session_events`): ``event:`` the type, ``id:`` ``SEQ.I``, so ``Last-Event-ID``
resumes after the last typed event seen.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import orjson
from starlette.responses import StreamingResponse

from apiary.api.session_events import Position, TypedEvent, Typer
from apiary.api.session_messages import entry_dict
from apiary.api.session_ops import FINISHED_KINDS, SessionOps, session_key
from apiary.api.watch import Recheck, TokenCheck
from apiary.errors import NotFound
from apiary.journal import Entry

EVENT_STREAM = "text/event-stream"

CHECK_INTERVAL = 1.0
"""Seconds between checks whether the session ended (and shutdown) while nothing is written."""


def sse_event(e: Entry) -> bytes:
    data = orjson.dumps(entry_dict(e))
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (e.seq, e.kind.encode(), data)


def sse_typed(t: TypedEvent) -> bytes:
    data = orjson.dumps(t.data)
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (t.id.encode(), t.type.encode(), data)


def sse_error(check: TokenCheck) -> bytes:
    """The last event of a stream whose token was refused (nothing when it was not)."""
    if check.error is None:
        return b""
    return b"event: error\ndata: %s\n\n" % orjson.dumps(check.error.as_dict())


def event_stream(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        body,
        media_type=EVENT_STREAM,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def stream_response(
    ops: SessionOps, cell: str, name: str, after: int, recheck: Recheck
) -> StreamingResponse:
    info = await ops.info(cell, name)  # 404 before the stream starts
    _ = ops.journal  # 503 before the stream starts when there is no journal
    check = TokenCheck(recheck)

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        async for entries in entry_batches(ops, cell, name, after, info.job, check):
            yield b"".join(sse_event(e) for e in entries) if entries else b": keepalive\n\n"
        yield sse_error(check)

    return event_stream(body())


async def typed_response(
    ops: SessionOps, cell: str, name: str, at: Position, recheck: Recheck
) -> StreamingResponse:
    """``events=typed``: the entries as typed events, resuming after ``at``."""
    info = await ops.info(cell, name)
    typer = await Typer.resuming(ops.journal, session_key(cell, name), at.read_after)
    check = TokenCheck(recheck)

    async def body() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        async for entries in entry_batches(ops, cell, name, at.read_after, info.job, check):
            if not entries:
                yield b": keepalive\n\n"
                continue
            chunk = [t for e in entries for i, t in enumerate(typer.events(e))
                     if at.wants(e.seq, i)]  # fmt: skip
            if chunk:
                yield b"".join(sse_typed(t) for t in chunk)
        yield sse_error(check)

    return event_stream(body())


async def entry_batches(
    ops: SessionOps, cell: str, name: str, after: int, job: bool, valid: TokenCheck | None = None
) -> AsyncIterator[list[Entry]]:
    """The session's entries after ``after`` in batches as they are journaled (an empty batch:
    time for a keepalive). Ends once the session has ended (after what was written meanwhile),
    for a job once its final or error is out, at shutdown, and once ``valid`` says the
    request's token is no longer good."""
    key = session_key(cell, name)
    journal = ops.journal
    stopping = ops.state.stopping
    keepalive = ops.state.config.bookmark_interval
    quiet_since = time.monotonic()
    while not stopping.is_set():
        if valid is not None and not await valid():
            return
        entries = await journal.wait(key, after, min(CHECK_INTERVAL, keepalive))
        if entries:
            after = entries[-1].seq
            quiet_since = time.monotonic()
            yield entries
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
                yield rest
            return
        if time.monotonic() - quiet_since >= keepalive:
            quiet_since = time.monotonic()
            yield []
