"""``make run``'s script (scripts/run) on a pseudo-terminal: it prints commands that work with
the port it was given, Ctrl-C ends it with exit 0, and a port another server holds is named as
such before anything starts."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ctlkit import REPO, Server

from services import free_port

VENV = Path(sys.executable).parent.parent
READY = b"Ctrl-C stops it."


def on_pty(
    env: dict[str, str], ctrl_c_after: bytes | None, timeout: float = 60.0
) -> tuple[int, str]:
    """Run scripts/run on a pty; send Ctrl-C once ``ctrl_c_after`` was printed. (exit, output)"""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.chdir(REPO)
        os.execvpe("bash", ["bash", "scripts/run"], {**os.environ, **env})
    out = b""
    deadline = time.monotonic() + timeout
    sent = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            out += data
        if ctrl_c_after is not None and not sent and ctrl_c_after in out:
            time.sleep(0.5)  # a person reading the lines first
            os.write(fd, b"\x03")  # the terminal turns it into SIGINT for the foreground group
            sent = True
    else:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        "VENV": str(VENV),
        "APIARY_PORT": str(free_port()),
        "APIARY_DATA_DIR": str(tmp_path / "data"),
        "APIARY_SERVER": "",
        "APIARY_TOKEN": "",
    }


def test_ctrl_c_exits_0_and_the_printed_exports_work(env: dict[str, str]) -> None:
    code, out = on_pty(env, READY)
    assert code == 0, out
    port = env["APIARY_PORT"]
    export = next(line for line in out.splitlines() if line.strip().startswith("export "))
    assert f"APIARY_SERVER=http://127.0.0.1:{port}" in export, out
    assert f"APIARY_DATA_DIR={env['APIARY_DATA_DIR']}" in export
    assert "apiaryd stopped" in out
    with socket.socket() as s, pytest.raises(ConnectionRefusedError):  # apiaryd is gone
        s.connect(("127.0.0.1", int(port)))


def test_a_port_held_by_another_apiaryd_is_named(
    shared_server: Server, env: dict[str, str]
) -> None:
    port = shared_server.url.rsplit(":", 1)[1]
    code, out = on_pty({**env, "APIARY_PORT": port}, None)
    assert code == 1, out
    assert f"127.0.0.1:{port} is held by another apiaryd (pid {shared_server.proc.pid})" in out
    mine = {**env, "APIARY_PORT": port, "APIARY_DATA_DIR": str(shared_server.data_dir)}
    code, out = on_pty(mine, None)
    assert code == 1 and "with this data dir" in out and "already runs" in out, out


def test_a_port_held_by_something_else_is_named(env: dict[str, str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code, out = on_pty({**env, "APIARY_PORT": str(port)}, None)
    assert code == 1, out
    assert f"127.0.0.1:{port} is in use" in out and "not by an apiaryd" in out, out


def test_without_a_terminal_sigterm_exits_0(env: dict[str, str], tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            ["bash", "scripts/run"],
            cwd=REPO,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while READY not in log.read_bytes():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    proc.terminate()
    assert proc.wait(30) == 0, log.read_text()
