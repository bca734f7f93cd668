"""Drone logs: one size-rotated file per drone, timestamped lines, tail/since reads and follow.

A drone's stderr (and its stdout when the keeper does not own it, i.e. http agents) is the only
trace of what it did, so the launcher pumps it into ``<log_dir>/<cell>/<drone>.log``; each line is
``<RFC3339 UTC timestamp> <stream> <text>``, close to the CRI log format Kubernetes uses, so
``apiaryctl logs --since`` can filter by time without guessing. Files are rotated by size
(``drone.log`` → ``drone.log.1`` → …, ``backups`` old files kept) so a chatty agent cannot fill the
disk. The writer also keeps the last lines per stream in memory: that is where a crash status gets
its "last stderr" from without re-reading the file.

Reads never load a whole file to answer ``--tail``: they walk the files backwards in blocks.
:func:`follow_logs` polls (no inotify dependency) and keeps the old file descriptor across a
rotation so the lines written just before it are not lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 4
_BLOCK = 64 * 1024


@dataclass(frozen=True)
class LogLine:
    """One line of a drone's log, as written by :class:`LogWriter`."""

    time: datetime
    stream: str
    text: str

    def format(self, *, timestamps: bool = False) -> str:
        """The text as ``apiaryctl logs`` prints it (``--timestamps`` prefixes the time)."""
        return f"{format_timestamp(self.time.timestamp())} {self.text}" if timestamps else self.text

    @classmethod
    def parse(cls, raw: str) -> LogLine | None:
        """Parse a stored line; ``None`` for anything that is not one (a torn or foreign line)."""
        ts, sep, rest = raw.partition(" ")
        stream, sep2, text = rest.partition(" ")
        if not sep or not stream:
            return None
        try:
            when = datetime.fromisoformat(ts)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return cls(when, stream, text if sep2 else "")


def format_timestamp(epoch: float) -> str:
    """RFC3339 in UTC with microseconds, fixed width so lines sort and align."""
    secs = int(epoch)
    micros = round((epoch - secs) * 1_000_000)
    if micros >= 1_000_000:
        secs, micros = secs + 1, micros - 1_000_000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{micros:06d}Z"


def drone_log_path(log_dir: str | os.PathLike[str], cell: str, drone: str) -> Path:
    """Where a drone's log lives; the node agent uses the same function to serve it."""
    return Path(log_dir) / cell / f"{drone}.log"


class LogWriter:
    """Appends timestamped lines to a drone's log file, rotating by size.

    Each :meth:`write_lines` batch goes to the file in one ``write(2)`` on an unbuffered file, so a
    concurrent reader never sees half a line and nothing is lost if the node agent is killed.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        backups: int = DEFAULT_BACKUPS,
        memory_lines: int = 10,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        if backups < 0:
            raise ValueError(f"backups must be >= 0, got {backups}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._clock = clock or time.time
        self._recent: dict[str, deque[str]] = {}
        self._memory_lines = memory_lines
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 — lives as long as self
        self._size = self._file.tell()

    def write(self, stream: str, text: str) -> None:
        """Append one line (``text`` without its newline)."""
        self.write_lines(stream, [text])

    def write_lines(self, stream: str, texts: list[str]) -> None:
        """Append lines from one stream, all stamped with the current time."""
        if not texts:
            return
        prefix = f"{format_timestamp(self._clock())} {stream} ".encode()
        recent = self._recent.get(stream)
        if recent is None:
            recent = self._recent[stream] = deque(maxlen=self._memory_lines)
        pending: list[bytes] = []
        pending_size = 0
        for text in texts:
            recent.append(text)
            line = prefix + text.replace("\n", " ").encode("utf-8", "replace") + b"\n"
            if self._size + pending_size + len(line) > self.max_bytes and (
                self._size + pending_size > 0
            ):
                self._flush(pending)
                pending, pending_size = [], 0
                self._rotate()
            pending.append(line)
            pending_size += len(line)
        self._flush(pending)

    def recent(self, stream: str = "stderr") -> list[str]:
        """The last lines of ``stream`` written through this writer (oldest first)."""
        return list(self._recent.get(stream, ()))

    def close(self) -> None:
        self._file.close()

    def _flush(self, lines: list[bytes]) -> None:
        if lines:
            data = b"".join(lines)
            self._file.write(data)
            self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115
        self._size = 0


def _files_newest_first(path: Path) -> list[Path]:
    rotated: list[tuple[int, Path]] = []
    for p in path.parent.glob(f"{path.name}.*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    return [path, *(p for _, p in sorted(rotated))]


def _reverse_lines(fd: int, end: int) -> Iterator[bytes]:
    """Lines of the first ``end`` bytes of ``fd``, last line first, read in blocks from the end."""
    pos, rest = end, b""
    while pos > 0:
        step = min(_BLOCK, pos)
        pos -= step
        chunk = os.pread(fd, step, pos) + rest
        parts = chunk.split(b"\n")
        rest = parts[0]
        for part in reversed(parts[1:]):
            if part:
                yield part
    if rest:
        yield rest


def _since_dt(since: datetime | float | None) -> datetime | None:
    if since is None or isinstance(since, datetime):
        return since
    return datetime.fromtimestamp(since, UTC)


def _collect(
    path: Path,
    tail: int | None,
    since: datetime | None,
    current: tuple[int, int] | None,
) -> list[LogLine]:
    """Newest-first walk over the current file (optionally an already-open fd) and its backups."""
    out: list[LogLine] = []
    if tail is not None and tail <= 0:
        return out
    for i, file in enumerate(_files_newest_first(path)):
        if i == 0 and current is not None:
            fd, end, owned = current[0], current[1], False
        else:
            try:
                fd = os.open(file, os.O_RDONLY)
            except FileNotFoundError:
                continue
            end, owned = os.fstat(fd).st_size, True
        try:
            for raw in _reverse_lines(fd, end):
                line = LogLine.parse(raw.decode("utf-8", "replace"))
                if line is None:
                    continue
                if since is not None and line.time < since:
                    return out[::-1]
                out.append(line)
                if tail is not None and len(out) >= tail:
                    return out[::-1]
        finally:
            if owned:
                os.close(fd)
    return out[::-1]


def read_logs(
    path: str | os.PathLike[str],
    tail: int | None = None,
    since: datetime | float | None = None,
) -> list[LogLine]:
    """The log's lines oldest first, across rotated files: the last ``tail`` of those at or after
    ``since`` (a datetime or epoch seconds). A drone that never logged has an empty log."""
    return _collect(Path(path), tail, _since_dt(since), None)


async def follow_logs(
    path: str | os.PathLike[str],
    tail: int | None = None,
    since: datetime | float | None = None,
    *,
    poll_interval: float = 0.2,
    stop: asyncio.Event | None = None,
) -> AsyncIterator[LogLine]:
    """Yield the existing lines (as :func:`read_logs`) and then every new line as it is written,
    across rotations, until ``stop`` is set or the consumer stops iterating. Waits for the file to
    appear if the drone has not logged yet."""
    p = Path(path)
    fd = await _open_when_present(p, poll_interval, stop)
    if fd is None:
        return
    try:
        pos = os.fstat(fd).st_size
        for line in _collect(p, tail, _since_dt(since), (fd, pos)):
            yield line
        buf = b""
        while True:
            data = os.pread(fd, _BLOCK, pos)
            if data:
                pos += len(data)
                *complete, buf = (buf + data).split(b"\n")
                for raw in complete:
                    parsed = LogLine.parse(raw.decode("utf-8", "replace"))
                    if parsed is not None:
                        yield parsed
                continue
            try:
                st = os.stat(p)
            except FileNotFoundError:
                st = None
            here = os.fstat(fd)
            if st is not None and (st.st_ino, st.st_dev) != (here.st_ino, here.st_dev):
                # Rotated: the loop above drained the old file, which the writer no longer
                # touches once the new one exists; continue at the start of the new one.
                if os.pread(fd, 1, pos):
                    continue
                os.close(fd)
                fd, pos, buf = os.open(p, os.O_RDONLY), 0, b""
                continue
            if here.st_size < pos:  # truncated in place (copytruncate-style rotation)
                pos, buf = 0, b""
                continue
            if await _wait(stop, poll_interval):
                return
    finally:
        if fd is not None:
            os.close(fd)


async def _open_when_present(path: Path, interval: float, stop: asyncio.Event | None) -> int | None:
    while True:
        with contextlib.suppress(FileNotFoundError):
            return os.open(path, os.O_RDONLY)
        if await _wait(stop, interval):
            return None


async def _wait(stop: asyncio.Event | None, interval: float) -> bool:
    """Sleep ``interval``; True if ``stop`` got set meanwhile.

    A plain sleep, then a look at ``stop``: a follower stops at most one poll interval late, and
    a poll costs one timer. (``wait_for(stop.wait(), interval)`` stopped at once but made a task,
    a timer and a cancellation per poll — three times the CPU, times every drone a node follows
    ten times a second.)"""
    if stop is not None and stop.is_set():
        return True
    await asyncio.sleep(interval)
    return stop is not None and stop.is_set()
