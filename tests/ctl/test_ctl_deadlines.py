"""``wait --timeout`` and ``get -w --watch-timeout`` end on time, whatever the watch carries.

Each line of a watch (a change, or a BOOKMARK every ``--bookmark-interval``) used to reset the
read timeout, and the deadline was only checked after a line: ``wait --timeout 20s`` took 32 s.
Here the server sends a bookmark every 2.5 s and the object changes just before the deadline,
the two worst cases for the old loop; the command must end within 1 s of its timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ctlkit import Ctl, Server, start_server

CELL = "deadlines"
TIMEOUT = 3.0


@pytest.fixture(scope="module")
def slow_bookmarks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("apiaryd") / "data", ["--bookmark-interval", "2.5"])
    yield srv
    srv.stop()


@pytest.fixture
def ctl(slow_bookmarks: Server, tmp_path: Path) -> Ctl:
    return Ctl(slow_bookmarks, tmp_path)


def agentspec(name: str, note: str = "") -> dict[str, object]:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": CELL, "labels": {"note": note or "none"}},
        "spec": {"runtime": {"command": ["cat"]}},
    }


def touch_at(server: Server, name: str, *moments: float) -> threading.Thread:
    """Relabel agentspec ``name`` at each moment (seconds from now): a watch line each time."""

    def run() -> None:
        start = time.monotonic()
        with server.client() as c:
            for i, at in enumerate(moments):
                time.sleep(max(0.0, start + at - time.monotonic()))
                c.apply(agentspec(name, f"n{i}"))

    t = threading.Thread(target=run)
    t.start()
    return t


def timed(ctl: Ctl, *args: str) -> tuple[float, int, str]:
    started = time.monotonic()
    r = ctl(*args)
    return time.monotonic() - started, r.exit_code, r.stderr + r.stdout


def test_wait_timeout_holds_with_bookmarks_and_changes(ctl: Ctl) -> None:
    with ctl.server.client() as c:
        c.apply(agentspec("a"))
    toucher = touch_at(ctl.server, "a", 0.5, TIMEOUT - 0.3)
    took, code, text = timed(
        ctl, "wait", "agentspec/a", "-n", CELL, "--for=condition=Never", "--timeout", "3s"
    )
    toucher.join()
    assert code == 1 and "timed out after 3s" in text, text
    assert TIMEOUT - 0.05 <= took < TIMEOUT + 1, took


def test_wait_timeout_holds_for_a_missing_object(ctl: Ctl) -> None:
    took, code, text = timed(ctl, "wait", "hive/ghost", "-n", CELL, "--timeout", "3s")
    assert code == 1 and "timed out after 3s" in text, text
    assert TIMEOUT - 0.05 <= took < TIMEOUT + 1, took


def test_wait_still_sees_the_change_it_waits_for(ctl: Ctl) -> None:
    with ctl.server.client() as c:
        c.apply(agentspec("gone"))

    def delete_soon() -> None:
        time.sleep(0.5)
        with ctl.server.client() as c:
            c.delete("agentspec", "gone", CELL)

    t = threading.Thread(target=delete_soon)
    t.start()
    took, code, text = timed(
        ctl, "wait", "agentspec/gone", "-n", CELL, "--for=delete", "--timeout", "20s"
    )
    t.join()
    assert (code, text.strip()) == (0, "agentspec/gone deleted") and took < 5, (took, text)


def test_get_watch_timeout_holds(ctl: Ctl) -> None:
    with ctl.server.client() as c:
        c.apply(agentspec("w"))
    toucher = touch_at(ctl.server, "w", 0.5, TIMEOUT - 0.3)
    took, code, text = timed(
        ctl, "get", "agentspecs", "-n", CELL, "-w", "-o", "name", "--watch-timeout", "3s"
    )
    toucher.join()
    assert code == 0 and "agentspec/w" in text, text
    assert TIMEOUT - 0.05 <= took < TIMEOUT + 1, took
