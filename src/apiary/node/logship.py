"""Ship drone logs from the node to the control plane, pushed over the API.

A node agent only makes outbound connections (DESIGN §1), so the API cannot read a drone's log
file on the node: the :class:`LogShipper` follows every tracked drone's file (``follow_logs``)
and POSTs batches — every ``batch_seconds`` or ``batch_lines`` lines, whichever comes first — to
``POST /api/v1/cells/{cell}/drones/{name}/logs``.

Exactly once, across outages and restarts:

- Each batch carries ``uid`` (the drone), ``source`` (this node) and ``seq`` (the index of its
  first line among every line this node shipped for the drone). The API remembers, per drone and
  source, the next ``seq`` it expects and drops the already-written prefix of a repeated batch,
  so a batch retried after a lost answer or an API restart is not written twice.
- A batch is retried (exponential back-off) until the API takes it; meanwhile the reader is not
  advanced, so memory stays bounded (one batch plus a small queue per drone): the lines wait on
  disk, where the node already wrote them.
- After each accepted batch a cursor (``seq``, time of the last line, how many lines with that
  exact time were shipped) is saved under ``cursor_dir``; a restarted node agent resumes from it
  instead of shipping the whole file again. A drone seen for the first time starts at its
  ``creationTimestamp``, so a recreated drone of the same name does not ship its predecessor's
  lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from apiary.errors import ApiaryError, BadRequest, NotFound, PayloadTooLarge
from apiary.node.logs import LogLine, drone_log_path, follow_logs

log = logging.getLogger("apiary.node.logship")

Obj = dict[str, Any]
PostLogs = Callable[[str, str, Obj], Awaitable[Any]]
"""``post(cell, drone, body)``: send one batch; raises :mod:`apiary.errors` on failure."""

MAX_LINE_CHARS = 16 * 1024
"""Longer lines are cut (with a marker) so one line can never exceed the API's body limit."""


@dataclass
class ShipperSettings:
    """Where the logs are and how eagerly they are shipped."""

    log_dir: str
    """The node's drone log directory (``<state dir>/logs``)."""

    cursor_dir: str
    """Where the per-drone shipping cursors live (``<state dir>/logship``)."""

    node: str = "node"
    """This node's name: the ``source`` of every batch."""

    batch_lines: int = 500
    batch_bytes: int = 256 * 1024
    batch_seconds: float = 0.2
    poll_interval: float = 0.1
    """How often an idle log file is checked for new lines."""

    retry_initial: float = 0.2
    retry_max: float = 5.0
    linger_seconds: float = 5.0
    """How long a drone that left this node is still followed, so its last lines (written
    while it stops) are shipped too."""

    queue_lines: int = 1000
    """Lines read ahead of the sender per drone (the bound on memory)."""


@dataclass
class Cursor:
    """How far a drone's log has been shipped (persisted after every accepted batch)."""

    uid: str
    seq: int = 0
    time: datetime | None = None
    at_time: int = 0
    """How many shipped lines carry exactly ``time`` (a node batch shares one timestamp)."""

    def advance(self, lines: list[LogLine]) -> None:
        last = lines[-1].time
        same = 0
        for line in reversed(lines):
            if line.time != last:
                break
            same += 1
        if same == len(lines) and self.time == last:
            same += self.at_time
        self.seq += len(lines)
        self.time, self.at_time = last, same

    def as_json(self) -> Obj:
        return {
            "uid": self.uid,
            "seq": self.seq,
            "time": rfc3339_micro(self.time) if self.time else None,
            "atTime": self.at_time,
        }

    @classmethod
    def from_json(cls, data: Any, uid: str) -> Cursor | None:
        if not isinstance(data, dict) or data.get("uid") != uid:
            return None
        try:
            when = datetime.fromisoformat(data["time"]) if data.get("time") else None
            return cls(uid, int(data.get("seq", 0)), when, int(data.get("atTime", 0)))
        except (TypeError, ValueError, KeyError):
            return None


def rfc3339_micro(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass
class _Drone:
    uid: str
    cell: str
    name: str
    start: datetime | None
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    leave_at: float | None = None
    task: asyncio.Task[None] | None = None
    gone: bool = False
    retrack: bool = False


class LogShipper:
    """Follows the log of every tracked drone and pushes it to the API until cancelled."""

    def __init__(
        self,
        post: PostLogs,
        settings: ShipperSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._post = post
        self.settings = settings
        self._clock = clock
        self._drones: dict[str, _Drone] = {}
        self._wake = asyncio.Event()

    # ---------------------------------------------------------------- what to follow

    def track(self, uid: str, cell: str, name: str, created: str | None = None) -> None:
        """Follow this drone's log (``created``: its creationTimestamp, where a first follow
        starts)."""
        found = self._drones.get(uid)
        if found is not None and not found.stop.is_set():
            found.leave_at = None
            return
        if found is not None:  # back while its old follower drains: a new one takes over
            found.retrack = True
            return
        self._drones[uid] = _Drone(uid, cell, name, parse_rfc3339(created))
        self._wake.set()

    def untrack(self, uid: str) -> None:
        """The drone left this node: ship what it still writes for ``linger_seconds``, then stop."""
        found = self._drones.get(uid)
        if found is not None and found.leave_at is None:
            found.leave_at = self._clock() + self.settings.linger_seconds
            self._wake.set()

    def tracked(self) -> list[str]:
        return list(self._drones)

    # ---------------------------------------------------------------------- running

    async def run(self) -> None:
        """Start a follower per tracked drone, stop those that left; cancel to end."""
        try:
            while True:
                self._wake.clear()
                now = self._clock()
                next_check: float | None = None
                for uid, d in list(self._drones.items()):
                    if d.task is None:
                        d.task = asyncio.create_task(self._ship(d), name=f"logship:{d.name}")
                    if d.leave_at is not None:
                        if now >= d.leave_at:
                            d.stop.set()
                        else:
                            wait = d.leave_at - now
                            next_check = wait if next_check is None else min(next_check, wait)
                    if d.task.done():
                        del self._drones[uid]
                        if d.retrack and not d.gone:
                            self._drones[uid] = _Drone(uid, d.cell, d.name, d.start)
                            self._wake.set()
                        elif d.gone or d.leave_at is not None:
                            self._cursor_path(d).unlink(missing_ok=True)
                        if not d.task.cancelled() and d.task.exception() is not None:
                            log.error(
                                "log shipping failed",
                                extra={
                                    "cell": d.cell,
                                    "drone": d.name,
                                    "error": repr(d.task.exception()),
                                },
                            )
                with contextlib.suppress(TimeoutError):  # not wait_for: it can drop a cancel
                    async with asyncio.timeout(next_check or 1.0):
                        await self._wake.wait()
        finally:
            tasks = [d.task for d in self._drones.values() if d.task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _ship(self, d: _Drone) -> None:
        queue: asyncio.Queue[LogLine | None] = asyncio.Queue(self.settings.queue_lines)
        cursor = self._load(d)
        reader = asyncio.create_task(self._read(d, cursor, queue), name=f"logread:{d.name}")
        try:
            await self._send(d, cursor, queue)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._wake.set()

    async def _read(self, d: _Drone, cursor: Cursor, queue: asyncio.Queue[LogLine | None]) -> None:
        """Lines after the cursor (or from the drone's creation) into ``queue``, then None."""
        path = drone_log_path(self.settings.log_dir, d.cell, d.name)
        since, skip = (cursor.time, cursor.at_time) if cursor.time else (d.start, 0)
        lines = follow_logs(
            path, since=since, poll_interval=self.settings.poll_interval, stop=d.stop
        )
        async with _closing(lines):
            async for line in lines:
                if skip and line.time == cursor.time:
                    skip -= 1
                    continue
                skip = 0
                await queue.put(line)
        await queue.put(None)

    async def _send(self, d: _Drone, cursor: Cursor, queue: asyncio.Queue[LogLine | None]) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        while True:
            first = await queue.get()
            if first is None:
                return
            batch, size, ended = [first], len(first.text), False
            deadline = loop.time() + s.batch_seconds
            while len(batch) < s.batch_lines and size < s.batch_bytes:
                remaining = deadline - loop.time()
                try:
                    if remaining <= 0:  # the window is over: take only what is already queued
                        item = queue.get_nowait()
                    else:
                        async with asyncio.timeout(remaining):  # (wait_for drops cancels)
                            item = await queue.get()
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if item is None:
                    ended = True
                    break
                batch.append(item)
                size += len(item.text)
            if not await self._deliver(d, cursor, batch):
                return
            if ended:
                return

    async def _deliver(self, d: _Drone, cursor: Cursor, batch: list[LogLine]) -> bool:
        """POST until accepted; False when the drone is gone from the API (stop shipping)."""
        body: Obj = {
            "uid": d.uid,
            "source": self.settings.node,
            "seq": cursor.seq,
            "lines": [_wire(line) for line in batch],
        }
        delay = self.settings.retry_initial
        while True:
            try:
                await self._post(d.cell, d.name, body)
                break
            except NotFound:
                d.gone = True
                return False
            except (BadRequest, PayloadTooLarge) as exc:  # will never pass: drop, don't wedge
                log.warning(
                    "log batch refused, dropped",
                    extra={"cell": d.cell, "drone": d.name, "error": str(exc)},
                )
                break
            except (ApiaryError, OSError) as exc:
                log.debug(
                    "logs not shipped; retrying",
                    extra={"cell": d.cell, "drone": d.name, "error": str(exc), "delay": delay},
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max)
        cursor.advance(batch)
        self._save(d, cursor)
        return True

    # ---------------------------------------------------------------------- cursors

    def _cursor_path(self, d: _Drone) -> Path:
        return Path(self.settings.cursor_dir) / d.cell / f"{d.name}.json"

    def _load(self, d: _Drone) -> Cursor:
        try:
            data = json.loads(self._cursor_path(d).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = None
        return Cursor.from_json(data, d.uid) or Cursor(d.uid)

    def _save(self, d: _Drone, cursor: Cursor) -> None:
        path = self._cursor_path(d)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(cursor.as_json()), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:  # a full disk must not stop shipping; a restart re-ships a bit
            log.warning(
                "cannot save the log cursor",
                extra={"cell": d.cell, "drone": d.name, "error": str(exc)},
            )


def _wire(line: LogLine) -> Obj:
    text = line.text
    if len(text) > MAX_LINE_CHARS:
        text = text[:MAX_LINE_CHARS] + " …[truncated]"
    return {"time": rfc3339_micro(line.time), "stream": line.stream, "text": text}


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
