"""Drone and hive logs: the node pushes them in, clients read, tail and follow them.

Nodes only connect outwards, so a node's :class:`~apiary.node.logship.LogShipper` POSTs each
drone's lines here and the API keeps them in ``<data-dir>/logs/<cell>/<drone>.log`` with the same
rotating :class:`~apiary.node.logs.LogWriter` the node uses (each line keeps the time the node
stamped it with). A batch names its ``source`` (node) and ``seq`` (index of its first line); the
next expected ``seq`` per source is kept next to the log (``<drone>.cursor``), so a batch resent
after a lost answer or an API restart is written once. With several API replicas each keeps the
logs its nodes sent it.

Reads: ``tail``, ``since`` (duration or RFC3339), ``timestamps`` and ``follow`` (a chunked
``text/plain`` stream that ends when the client goes away, the drone is deleted, the server stops
or the request's token is revoked or expires: a follow checks it again every
:data:`~apiary.api.watch.REAUTH_SECONDS`, as a watch does). Hive logs merge the hive's drones
(label ``apiary.io/hive``) by time, each line prefixed ``[drone-name] ``; a hive follow picks up
drones created while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from apiary.api import params
from apiary.api import watch as watches
from apiary.api.bodies import parse_body, read_body
from apiary.api.logstore import LogStore
from apiary.api.middleware import PRINCIPAL_KEY
from apiary.api.responses import json_response
from apiary.api.state import ApiState
from apiary.api.watch import Recheck, token_recheck
from apiary.errors import BadRequest, FieldDetail, Invalid, NotFound, Unavailable
from apiary.node.logs import LogLine, follow_logs, read_logs
from apiary.resources.names import dns_label_error
from apiary.store import Store, parse_selector

TEXT = "text/plain; charset=utf-8"
HIVE_LABEL = "apiary.io/hive"
_STREAM = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

__all__ = ["LogStore", "logs_routes", "parse_since"]


# ------------------------------------------------------------------------------ parsing


@dataclass(frozen=True)
class ReadOptions:
    tail: int | None
    since: datetime | None
    follow: bool
    timestamps: bool


def parse_since(raw: str, now: datetime | None = None) -> datetime:
    """``5m``, ``1h30m``, ``90`` (seconds) or an RFC3339 time → the datetime lines start at."""
    text = raw.strip()
    seconds = _duration_seconds(text.lower())
    if seconds is not None:
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        msg = f"{raw!r} is neither a duration (30s, 5m, 1h30m) nor an RFC3339 time"
        raise BadRequest(f"query parameter since: {msg}", [FieldDetail("since", msg)]) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _duration_seconds(s: str) -> float | None:
    try:
        value = float(s)
    except ValueError:
        pos, total = 0, 0.0
        for m in _DURATION.finditer(s):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        return total if s and pos == len(s) else None
    return value if value >= 0 else None


def read_options(q: QueryParams) -> ReadOptions:
    raw_since = q.get("since")
    return ReadOptions(
        tail=params.non_negative_int(q, "tail"),
        since=parse_since(raw_since) if raw_since else None,
        follow=params.flag(q, "follow"),
        timestamps=params.flag(q, "timestamps"),
    )


def parse_batch(body: dict[str, Any]) -> tuple[str | None, str | None, int | None, list[LogLine]]:
    """(uid, source, seq, lines) of a POSTed batch; every bad field is named in a 422."""
    problems: list[FieldDetail] = []
    uid, source, seq = body.get("uid"), body.get("source"), body.get("seq")
    if uid is not None and not isinstance(uid, str):
        problems.append(FieldDetail("uid", "must be a string"))
    if source is not None and (not isinstance(source, str) or not 0 < len(source) <= 253):
        problems.append(FieldDetail("source", "must be a non-empty string (the node name)"))
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        problems.append(FieldDetail("seq", "must be a non-negative integer"))
    if (source is None) != (seq is None):
        problems.append(
            FieldDetail("seq" if seq is None else "source", "source and seq go together")
        )
    raw_lines = body.get("lines")
    lines: list[LogLine] = []
    if not isinstance(raw_lines, list):
        problems.append(FieldDetail("lines", "required: a list of {time, stream, text}"))
        raw_lines = []
    now = datetime.now(UTC)
    for i, item in enumerate(raw_lines):
        at = f"lines[{i}]"
        if not isinstance(item, dict):
            problems.append(FieldDetail(at, "must be an object with time, stream, text"))
            continue
        text, stream, stamp = item.get("text"), item.get("stream", "stderr"), item.get("time")
        when: datetime | None = now
        if not isinstance(text, str):
            problems.append(FieldDetail(f"{at}.text", "required: a string"))
        if not isinstance(stream, str) or not _STREAM.match(stream):
            problems.append(FieldDetail(f"{at}.stream", "must be a word like stderr or stdout"))
        if stamp is not None:
            when = _rfc3339(stamp)
            if when is None:
                problems.append(FieldDetail(f"{at}.time", f"not an RFC3339 time: {stamp!r}"))
        if isinstance(text, str) and isinstance(stream, str) and when is not None:
            lines.append(LogLine(when, stream, text))
    if problems:
        summary = "; ".join(f"{p.field}: {p.message}" for p in problems[:5])
        raise Invalid(f"log batch is invalid: {summary}", problems)
    return uid, source, seq, lines


def _rfc3339(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


# ---------------------------------------------------------------------------- handlers


def _logs(request: Request) -> LogStore:
    found: LogStore | None = getattr(request.app.state, "apiary_logs", None)
    if found is None:
        raise Unavailable("this API server keeps no logs (started without a log directory)")
    return found


def _state(request: Request) -> ApiState:
    state: ApiState = request.app.state.apiary
    return state


def _names(request: Request, verb: str, kind: str) -> tuple[str, str]:
    cell, name = request.path_params["cell"], request.path_params["name"]
    for what, value in (("cell", cell), ("name", name)):
        problem = dns_label_error(value)
        if problem:
            raise NotFound(f"{kind} {name!r} not found in cell {cell!r} ({what}: {problem})")
    _state(request).authorizer.authorize(request.scope[PRINCIPAL_KEY], verb, kind, cell)
    return cell, name


async def post_drone_logs(request: Request) -> Response:
    cell, name = _names(request, "create/logs", "Drone")
    state, logs = _state(request), _logs(request)
    raw = await read_body(request, state.config.max_body_bytes)
    uid, source, seq, lines = parse_batch(parse_body(raw, request.headers.get("content-type")))
    drone = await state.store.get("Drone", cell, name)
    # a node pushes the logs of its own drones only
    state.authorizer.check_object(request.scope[PRINCIPAL_KEY], "create/logs", "Drone", drone)
    if uid and drone["metadata"].get("uid") != uid:
        raise NotFound(f"Drone {name!r} with uid {uid} no longer exists in cell {cell!r}")
    written, following = logs.append(
        cell, name, uid or drone["metadata"].get("uid"), source, seq, lines
    )
    await logs.prune_if_due(state.store)
    return json_response({"written": written, "next": following})


def _render(lines: list[LogLine], timestamps: bool, prefix: str = "") -> bytes:
    return "".join(f"{prefix}{ln.format(timestamps=timestamps)}\n" for ln in lines).encode()


async def get_drone_logs(request: Request) -> Response:
    cell, name = _names(request, "get/logs", "Drone")
    state, logs = _state(request), _logs(request)
    opts = read_options(request.query_params)
    drone = await state.store.get("Drone", cell, name)
    path = logs.path(cell, name)
    backlog = await asyncio.to_thread(read_logs, path, opts.tail, opts.since)
    if not opts.follow:
        return Response(_render(backlog, opts.timestamps), media_type=TEXT)

    recheck = token_recheck(state, request.headers.get("authorization"))

    async def stream() -> AsyncIterator[bytes]:
        stop = asyncio.Event()
        uid = drone["metadata"]["uid"]
        watch = asyncio.create_task(
            _until_gone(state, logs, "Drone", cell, name, uid, stop, recheck)
        )
        try:
            if backlog:
                yield _render(backlog, opts.timestamps)
            lines = live_lines(path, backlog, opts.tail, opts.since, stop, logs.poll_interval)
            async with _closing(lines):
                async for line in lines:
                    yield _render([line], opts.timestamps)
        finally:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    return StreamingResponse(stream(), media_type=TEXT, headers={"X-Accel-Buffering": "no"})


async def live_lines(
    path: Path,
    backlog: list[LogLine],
    tail: int | None,
    since: datetime | None,
    stop: asyncio.Event,
    poll_interval: float,
) -> AsyncIterator[LogLine]:
    """The lines written after ``backlog`` (what a read with ``tail``/``since`` returned), with
    neither a gap nor a repeat between the two, until ``stop`` is set and the file is drained."""
    after = backlog[-1].time if backlog else None
    if after is not None:
        lines = follow_logs(path, since=after, poll_interval=poll_interval, stop=stop)
    elif tail == 0 and os.path.exists(path):  # noqa: ASYNC240 — one stat
        lines = follow_logs(path, tail=0, poll_interval=poll_interval, stop=stop)
    else:  # nothing matched when the backlog was read: whatever is there now is new
        lines = follow_logs(path, since=since, poll_interval=poll_interval, stop=stop)
    async with _closing(lines):
        async for line in lines:
            if after is not None:
                if line.time <= after:
                    continue
                after = None
            yield line


async def _until_gone(
    state: ApiState, logs: LogStore, kind: str, cell: str, name: str, uid: str, stop: asyncio.Event,
    recheck: Recheck,
) -> None:  # fmt: skip
    """Set ``stop`` once the object is deleted (or replaced), the server stops or the token is no
    longer good."""
    valid = watches.TokenCheck(recheck)
    while not state.stopping.is_set():
        try:
            current = await state.store.get(kind, cell, name)
        except NotFound:
            break
        if current["metadata"].get("uid") != uid or not await valid():
            break
        with contextlib.suppress(TimeoutError):  # not wait_for: it can drop a cancel (3.11)
            async with asyncio.timeout(logs.gone_poll_seconds):
                await state.stopping.wait()
    stop.set()


async def _hive_drones(store: Store, cell: str, hive: str) -> list[str]:
    listed = await store.list("Drone", cell, selector=parse_selector(f"{HIVE_LABEL}={hive}"))
    return sorted(o["metadata"]["name"] for o in listed.items)


async def get_hive_logs(request: Request) -> Response:
    cell, name = _names(request, "get/logs", "Hive")
    state, logs = _state(request), _logs(request)
    opts = read_options(request.query_params)
    hive = await state.store.get("Hive", cell, name)
    drones = await _hive_drones(state.store, cell, name)
    backlogs = {
        d: await asyncio.to_thread(read_logs, logs.path(cell, d), opts.tail, opts.since)
        for d in drones
    }
    merged = list(
        heapq.merge(
            *([(d, ln) for ln in lines] for d, lines in backlogs.items()),
            key=lambda item: item[1].time,
        )
    )
    if opts.tail is not None:
        merged = merged[len(merged) - opts.tail :] if opts.tail else []
    head = b"".join(_render([ln], opts.timestamps, f"[{d}] ") for d, ln in merged)
    if not opts.follow:
        return Response(head, media_type=TEXT)
    uid = hive["metadata"]["uid"]
    recheck = token_recheck(state, request.headers.get("authorization"))
    follow = _HiveFollow(state, logs, cell, name, uid, opts, backlogs, recheck)
    return StreamingResponse(follow.stream(head), media_type=TEXT)


class _HiveFollow:
    """Live lines of every drone of a hive, as they come; new drones are picked up."""

    def __init__(
        self, state: ApiState, logs: LogStore, cell: str, hive: str, uid: str,
        opts: ReadOptions, backlogs: dict[str, list[LogLine]], recheck: Recheck,
    ) -> None:  # fmt: skip
        self.state, self.logs, self.cell, self.hive, self.uid = state, logs, cell, hive, uid
        self.opts = opts
        self.recheck = recheck
        self.backlogs = backlogs
        self.queue: asyncio.Queue[tuple[str, LogLine]] = asyncio.Queue(1000)
        self.followers: dict[str, tuple[asyncio.Event, asyncio.Task[None]]] = {}

    def _start(self, drone: str, backlog: list[LogLine], initial: bool) -> None:
        stop = asyncio.Event()
        tail, since = (self.opts.tail, self.opts.since) if initial else (None, None)
        task = asyncio.create_task(self._pump(drone, backlog, tail, since, stop))
        self.followers[drone] = (stop, task)

    async def _pump(
        self, drone: str, backlog: list[LogLine], tail: int | None, since: datetime | None,
        stop: asyncio.Event,
    ) -> None:  # fmt: skip
        path = self.logs.path(self.cell, drone)
        lines = live_lines(path, backlog, tail, since, stop, self.logs.poll_interval)
        async with _closing(lines):
            async for line in lines:
                await self.queue.put((drone, line))

    async def _relist(self) -> bool:
        """Follow new drones, let deleted ones drain; False once the hive is gone."""
        try:
            hive = await self.state.store.get("Hive", self.cell, self.hive)
        except NotFound:
            return False
        if hive["metadata"].get("uid") != self.uid:
            return False
        current = set(await _hive_drones(self.state.store, self.cell, self.hive))
        for drone in current - set(self.followers):
            self._start(drone, [], initial=False)
        for drone, (stop, _) in self.followers.items():
            if drone not in current:
                stop.set()
        return True

    async def stream(self, head: bytes) -> AsyncIterator[bytes]:
        try:
            if head:
                yield head
            for drone, backlog in self.backlogs.items():
                self._start(drone, backlog, initial=True)
            loop = asyncio.get_running_loop()
            valid = watches.TokenCheck(self.recheck)
            next_relist = loop.time() + self.logs.gone_poll_seconds
            closing = False
            while True:
                tasks = [task for _, task in self.followers.values()]
                if closing and self.queue.empty() and all(t.done() for t in tasks):
                    return
                timeout = 0.05 if closing else max(0.0, next_relist - loop.time())
                first = None
                with contextlib.suppress(TimeoutError):  # not wait_for: it can drop a cancel
                    async with asyncio.timeout(timeout):
                        first = await self.queue.get()
                if first is not None:
                    batch = [first]
                    while not self.queue.empty() and len(batch) < 500:
                        batch.append(self.queue.get_nowait())
                    yield b"".join(
                        _render([ln], self.opts.timestamps, f"[{d}] ") for d, ln in batch
                    )
                if not closing and loop.time() >= next_relist:
                    closing = (
                        self.state.stopping.is_set()
                        or not await valid()
                        or not await self._relist()
                    )
                    next_relist = loop.time() + self.logs.gone_poll_seconds
                    if closing:  # the followers drain their files, then end
                        for stop, _ in self.followers.values():
                            stop.set()
        finally:
            tasks = [task for _, task in self.followers.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def logs_routes() -> APIRouter:
    r = APIRouter(tags=["logs"])
    drone = "/api/v1/cells/{cell}/drones/{name}/logs"

    @r.post(drone, summary="Append log lines of a drone (what node agents send)")
    async def post_logs(request: Request, cell: str, name: str) -> Response:
        return await post_drone_logs(request)

    @r.get(drone, summary="A drone's log: tail, since, timestamps, follow", response_class=Response)
    async def drone_logs(request: Request, cell: str, name: str) -> Response:
        return await get_drone_logs(request)

    @r.get(
        "/api/v1/cells/{cell}/hives/{name}/logs",
        summary="The logs of a hive's drones merged by time, each line prefixed [drone]",
        response_class=Response,
    )
    async def hive_logs(request: Request, cell: str, name: str) -> Response:
        return await get_hive_logs(request)

    return r


@contextlib.asynccontextmanager
async def _closing(it: AsyncIterator[LogLine]) -> AsyncIterator[AsyncIterator[LogLine]]:
    """``aclosing`` for what is typed as an iterator: a generator left early still closes its
    file descriptor now, not whenever the loop finalizes it."""
    try:
        yield it
    finally:
        aclose = getattr(it, "aclose", None)
        if aclose is not None:
            await aclose()
