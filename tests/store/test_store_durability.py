"""kill -9 in the middle of a burst of writes loses nothing that was acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest

from apiary.store import open_store
from services import fresh_postgres_url

WRITER = Path(__file__).with_name("durability_writer.py")
SRC = Path(__file__).resolve().parents[2] / "src"

pytestmark = pytest.mark.slow


async def _kill_mid_burst(url: str, *, acks_before_kill: int = 200) -> list[str]:
    """Run the writer, SIGKILL it once it is busy, return every name it acknowledged."""
    env = dict(os.environ, PYTHONPATH=f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WRITER),
        url,
        "burst",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acked: list[str] = []
    killed = False
    try:
        async with asyncio.timeout(4):
            first = await proc.stdout.readline()
            if first != b"ready\n":
                err = await proc.stderr.read()
                raise AssertionError(f"writer failed to start: {first!r} {err.decode()[-2000:]}")
            while len(acked) < acks_before_kill:
                line = await proc.stdout.readline()
                assert line, "writer exited early"
                acked.append(line.decode().strip())
        # os.kill, not proc.send_signal: Popen.send_signal polls (waitpid) first and races the
        # asyncio child watcher, which then reports exit status 255 (CPython issue #87744).
        os.kill(proc.pid, signal.SIGKILL)
        killed = True
        rest = await proc.stdout.read()  # acknowledgements already in the pipe count too
        acked += [line for line in rest.decode().splitlines() if line.strip()]
    finally:
        if not killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    if proc.returncode != -signal.SIGKILL:
        err = (await proc.stderr.read()).decode()[-2000:]
        raise AssertionError(f"writer ended by itself ({proc.returncode}): {err}")
    return [name for name in acked if name.startswith("burst-")]


async def _assert_all_present(url: str, acked: list[str]) -> None:
    async with open_store(url) as store:
        stored = {o["metadata"]["name"] for o in (await store.list("Hive", "default")).items}
        missing = [name for name in acked if name not in stored]
        assert not missing, f"{len(missing)} acknowledged writes lost, first {missing[:3]}"
        # the store is healthy after the crash: versions continue, writes work
        before = await store.resource_version()
        created = await store.create(
            {
                "apiVersion": "apiary.io/v1",
                "kind": "Hive",
                "metadata": {"name": "after", "namespace": "default"},
                "spec": {},
            }
        )
        assert int(created["metadata"]["resourceVersion"]) == before + 1
        assert before >= len(acked)


async def test_sqlite_keeps_every_acknowledged_write_after_kill_9(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/apiary.db"
    acked = await _kill_mid_burst(url)
    assert len(acked) >= 200
    await _assert_all_present(url, acked)


async def test_postgres_keeps_every_acknowledged_write_after_kill_9() -> None:
    async with fresh_postgres_url() as url:
        acked = await _kill_mid_burst(url)
        assert len(acked) >= 200
        await _assert_all_present(url, acked)
