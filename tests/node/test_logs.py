"""Drone logs: timestamped lines, size rotation, tail/since reads and follow across rotation."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from apiary.node.logs import LogLine, LogWriter, drone_log_path, follow_logs, read_logs


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_lines_are_rfc3339_stamped_with_stream(tmp_path: Path) -> None:
    path = drone_log_path(tmp_path, "default", "echo-1")
    assert path == tmp_path / "default" / "echo-1.log"
    w = LogWriter(path, clock=Clock(1_700_000_000.25))
    w.write("stderr", "boom: it broke")
    w.write_lines("stdout", ["a", "line\nwith newline", ""])
    w.close()
    raw = path.read_text().splitlines()
    assert raw[0] == "2023-11-14T22:13:20.250000Z stderr boom: it broke"
    assert raw[2] == "2023-11-14T22:13:20.250000Z stdout line with newline"
    lines = read_logs(path)
    assert [(ln.stream, ln.text) for ln in lines] == [
        ("stderr", "boom: it broke"),
        ("stdout", "a"),
        ("stdout", "line with newline"),
        ("stdout", ""),
    ]
    assert lines[0].time == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
    assert lines[0].format() == "boom: it broke"
    assert lines[0].format(timestamps=True) == "2023-11-14T22:13:20.250000Z boom: it broke"
    assert w.recent("stdout") == ["a", "line\nwith newline", ""]


def test_memory_keeps_only_the_last_lines(tmp_path: Path) -> None:
    w = LogWriter(tmp_path / "d.log", memory_lines=3)
    w.write_lines("stderr", [str(i) for i in range(10)])
    w.close()
    assert w.recent("stderr") == ["7", "8", "9"]
    assert w.recent("stdout") == []


def test_rotation_by_size_keeps_n_backups(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    w = LogWriter(path, max_bytes=200, backups=2, clock=Clock())
    for i in range(100):
        w.write("stdout", f"line {i:03d}")  # 40 bytes a line with the prefix
    w.close()
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["d.log", "d.log.1", "d.log.2"]
    assert all(p.stat().st_size <= 200 for p in tmp_path.iterdir())
    texts = [ln.text for ln in read_logs(path)]
    # Only the newest lines survive, in order, with no gaps inside what is kept.
    assert texts == [f"line {i:03d}" for i in range(100 - len(texts), 100)]
    assert 10 <= len(texts) <= 15
    # Reopening appends to the current file rather than truncating it.
    w = LogWriter(path, max_bytes=200, backups=2, clock=Clock())
    w.write("stdout", "after reopen")
    w.close()
    assert read_logs(path)[-2].text == "line 099"


def test_tail_and_since_across_rotated_files(tmp_path: Path) -> None:
    clock = Clock(1000.0)
    path = tmp_path / "d.log"
    w = LogWriter(path, max_bytes=300, backups=5, clock=clock)
    for i in range(30):
        clock.now = 1000.0 + i
        w.write("stderr", f"event {i}")
    w.close()
    assert len(list(tmp_path.iterdir())) > 2  # the reads below span several files
    assert [ln.text for ln in read_logs(path, tail=3)] == ["event 27", "event 28", "event 29"]
    assert [ln.text for ln in read_logs(path, since=1025.0)] == [
        f"event {i}" for i in range(25, 30)
    ]
    since = datetime.fromtimestamp(1020.0, UTC)
    got = read_logs(path, tail=2, since=since)
    assert [ln.text for ln in got] == ["event 28", "event 29"]
    assert read_logs(path, tail=0) == []
    assert read_logs(tmp_path / "never-logged.log") == []


def test_foreign_lines_are_skipped(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    path.write_text("garbage\n2024-01-01T00:00:00.000000Z stdout ok\nnot-a-time stdout x\n")
    assert [ln.text for ln in read_logs(path)] == ["ok"]
    assert LogLine.parse("2024-01-01T00:00:00Z stdout") == LogLine(
        datetime(2024, 1, 1, tzinfo=UTC), "stdout", ""
    )


def test_bad_writer_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_bytes"):
        LogWriter(tmp_path / "d.log", max_bytes=0)
    with pytest.raises(ValueError, match="backups"):
        LogWriter(tmp_path / "d.log", backups=-1)


async def test_follow_yields_tail_then_new_lines_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "d.log"
    w = LogWriter(path, max_bytes=400, backups=3)
    for i in range(5):
        w.write("stdout", f"old {i}")
    stop = asyncio.Event()
    got: list[str] = []

    async def consume() -> None:
        async for line in follow_logs(path, tail=2, poll_interval=0.01, stop=stop):
            got.append(line.text)

    task = asyncio.create_task(consume())
    await _until(lambda: len(got) == 2)
    assert got == ["old 3", "old 4"]
    for i in range(40):  # several rotations, with the follower polling in between
        w.write("stdout", f"new {i}")
        if i % 7 == 0:
            await asyncio.sleep(0.02)
    await _until(lambda: len(got) == 42)
    stop.set()
    await asyncio.wait_for(task, 2)
    w.close()
    assert got[2:] == [f"new {i}" for i in range(40)]
    assert (tmp_path / "d.log.1").exists()


async def test_follow_waits_for_the_file_to_appear(tmp_path: Path) -> None:
    path = drone_log_path(tmp_path, "c", "late")
    gen = follow_logs(path, poll_interval=0.01)
    first = asyncio.ensure_future(gen.__anext__())
    await asyncio.sleep(0.05)
    assert not first.done()
    w = LogWriter(path)
    w.write("stderr", "hello")
    line = await asyncio.wait_for(first, 2)
    assert (line.stream, line.text) == ("stderr", "hello")
    await gen.aclose()
    w.close()


async def _until(predicate: object, timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)
