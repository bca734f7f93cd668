"""Watch streams: newline-delimited JSON events from the store's change log.

The 410 for a compacted version is decided before the first byte is sent, so a client sees a
proper error status; if the log is compacted under a slow reader later, the stream ends with an
ERROR line (the Kubernetes convention). Idle streams get BOOKMARK lines so proxies keep them open
and clients can resume from a recent version. A ``resourceVersion`` newer than any the store has
given is the client's mistake, answered 400 naming the parameter before the stream starts (it
used to be accepted, and the store's scan failed inside the stream, which then just broke off).

A watch can stay open for hours, longer than its token: every :data:`REAUTH_SECONDS` the stream
checks its token again (the authenticator's cache makes that a dict lookup most times) and ends
with an ERROR line — 401, the reason the token is refused — once it is revoked or expired.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import StreamingResponse

from apiary.api.params import ListParams
from apiary.api.secrets import redact
from apiary.api.state import ApiState
from apiary.errors import ApiaryError, BadRequest, FieldDetail, Gone
from apiary.resources import API_VERSION, KindInfo
from apiary.store import Change, Store

NDJSON = "application/x-ndjson"
REAUTH_SECONDS = 5.0
"""How often an open watch checks that its token is still good (revocation, expiry)."""
Recheck = Callable[[], Awaitable[None]]
"""Raises (Unauthorized) once the request's token is no longer valid."""


def token_recheck(state: ApiState, authorization: str | None) -> Recheck:
    """What a long-running response (a watch, a log follow, a session stream) calls to check its
    token again."""

    async def still_valid() -> None:
        await state.authenticator.authenticate(authorization)

    return still_valid


class TokenCheck:
    """The request's token, checked again at most every :data:`REAUTH_SECONDS`; ``error`` is
    why it was refused once it was."""

    def __init__(self, recheck: Recheck) -> None:
        self.recheck = recheck
        self.checked = asyncio.get_running_loop().time()
        self.error: ApiaryError | None = None

    async def __call__(self) -> bool:
        if self.error is not None:
            return False
        now = asyncio.get_running_loop().time()
        if now - self.checked < REAUTH_SECONDS:
            return True
        self.checked = now
        try:
            await self.recheck()
        except ApiaryError as exc:
            self.error = exc
            return False
        return True


async def horizon(store: Store) -> int:
    """The newest compacted version (older watches are 410). Uses the store's primitive."""
    return await store._horizon()


def _line(type_: str, obj: Any) -> bytes:
    return orjson.dumps({"type": type_, "object": obj}) + b"\n"


def _bookmark(kind: str, rv: int) -> bytes:
    return _line(
        "BOOKMARK",
        {"apiVersion": API_VERSION, "kind": kind, "metadata": {"resourceVersion": str(rv)}},
    )


async def _not_from_the_future(store: Store, since: int) -> None:
    current = await store.resource_version()
    if since > current:
        message = (
            f"{since} is newer than the store's newest version ({current}): watch from a "
            "resourceVersion a list or an object gave"
        )
        raise BadRequest(
            f"query parameter resourceVersion: {message}",
            [FieldDetail("resourceVersion", message)],
        )


async def watch_response(
    state: ApiState,
    info: KindInfo,
    namespace: str | None,
    lp: ListParams,
    reveal: bool,
    recheck: Recheck | None = None,
) -> StreamingResponse:
    store = state.store
    initial: list[dict[str, Any]] = []
    if lp.resource_version is None:
        since, token = None, None
        while True:  # every current object as a synthetic ADDED, then changes after the list
            page = await store.list(
                info.kind, namespace, selector=lp.selector, limit=500, continue_token=token
            )
            since = page.resource_version if since is None else since
            initial.extend(o for o in page.items if lp.matches(o))
            token = page.continue_token
            if not token:
                break
        assert since is not None
    else:
        since = lp.resource_version
        await _not_from_the_future(store, since)
        if since < await horizon(store):
            raise Gone(f"resourceVersion {since} is too old; list again and watch from there")
    return StreamingResponse(
        _stream(
            state,
            info,
            namespace,
            lp,
            reveal,
            since,
            initial,
            send_bookmark=lp.resource_version is None,
            recheck=recheck,
        ),
        media_type=NDJSON,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    state: ApiState,
    info: KindInfo,
    namespace: str | None,
    lp: ListParams,
    reveal: bool,
    since: int,
    initial: list[dict[str, Any]],
    send_bookmark: bool,
    recheck: Recheck | None = None,
) -> AsyncIterator[bytes]:
    state.metrics.watches.inc()
    changes = state.store.watch(info.kind, namespace, since=since, selector=lp.selector)
    pending: asyncio.Task[Change] | None = None
    stop = asyncio.ensure_future(state.stopping.wait())
    try:
        if initial:
            shown = [lp.shown(o) for o in initial] if lp.view is not None else initial
            yield b"".join(_line("ADDED", o if reveal else redact(o)) for o in shown)
        if send_bookmark:
            yield _bookmark(info.kind, since)
        last = since
        interval = state.config.bookmark_interval
        loop = asyncio.get_running_loop()
        marked = loop.time()
        valid = TokenCheck(recheck) if recheck is not None else None
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(changes))
            wait = min(interval - (loop.time() - marked), REAUTH_SECONDS)
            done, _ = await asyncio.wait(
                {pending, stop}, timeout=max(0.0, wait), return_when=asyncio.FIRST_COMPLETED
            )
            if stop in done:
                return
            now = loop.time()
            if valid is not None and not await valid():
                assert valid.error is not None
                yield _line("ERROR", valid.error.as_dict())
                return
            if not done:
                if now - marked >= interval:
                    marked = now
                    yield _bookmark(info.kind, last)
                continue
            task, pending = pending, None
            marked = now  # a bookmark marks an idle interval, as before
            try:
                change = task.result()
            except StopAsyncIteration:
                return
            except ApiaryError as exc:
                yield _line("ERROR", exc.as_dict())
                return
            last = change.rv
            if not lp.matches(change.object):
                continue
            obj = lp.shown(change.object)
            yield _line(change.type, obj if reveal else redact(obj))
    finally:
        state.metrics.watches.dec()
        stop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stop
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending
        with contextlib.suppress(Exception):
            await changes.aclose()  # type: ignore[attr-defined]
