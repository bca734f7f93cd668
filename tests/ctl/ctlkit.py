"""CLI test helpers: a real ``apiaryd`` subprocess (ephemeral port, tmp data dir) and an
in-process CLI runner.

The CLI runs in-process through Typer's CliRunner (fast: no interpreter start per command) with
an environment that points it at the test server and at a throwaway config file, so a
developer's own ~/.config/apiary never leaks into a test.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from apiary.client import ApiClient
from apiary.ctl.main import app

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "examples" / "seed-manifests"  # identical to the originals
_LISTENING = re.compile(r"listening on (http://\S+)")


def apiaryd_command() -> list[str]:
    exe = shutil.which("apiaryd", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "apiary.server.main"]


@dataclass
class Server:
    url: str
    data_dir: Path
    token: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, **kw: object) -> ApiClient:
        return ApiClient(self.url, self.token, **kw)  # type: ignore[arg-type]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Starting:
    """An apiaryd :func:`launch_server` started; :func:`wait_server` waits until it serves."""

    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path


def launch_server(data_dir: Path, extra: list[str] | None = None) -> Starting:
    """Start ``apiaryd --port 0`` on ``data_dir`` without waiting for it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir.parent / f"{data_dir.name}.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            [
                *apiaryd_command(),
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                *(extra or []),
            ],
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    return Starting(data_dir, proc, log)


def wait_server(starting: Starting, timeout: float = 20.0) -> Server:
    """Wait for a launched apiaryd's ``listening on`` line and ``/readyz``."""
    data_dir, proc, log = starting.data_dir, starting.proc, starting.log
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        m = _LISTENING.search(log.read_text(errors="replace"))
        if m:
            url = m.group(1).rstrip(")")
        elif proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"apiaryd did not start:\n{log.read_text(errors='replace')[-3000:]}")
        else:
            time.sleep(0.02)
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"apiaryd at {url} never became ready")
        time.sleep(0.02)
    token = (data_dir / "admin.token").read_text().strip()
    return Server(url, data_dir, token, proc, log)


def start_server(data_dir: Path, extra: list[str] | None = None, timeout: float = 20.0) -> Server:
    """Start ``apiaryd --port 0`` and wait for its ``listening on`` line and ``/readyz``."""
    return wait_server(launch_server(data_dir, extra), timeout)


class Spares:
    """New apiaryd servers, each started one ahead of its use: while a module's tests run on
    theirs, the next one starts (its second or so overlaps those tests instead of adding to
    them), and a used one is stopped without waiting (it is reaped at :meth:`close`). Every
    server is new, on a data dir of its own, and serves one user only, as one started on
    demand would."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.ahead: Starting | None = None
        self.retired: list[Server] = []

    def _launch(self) -> Starting:
        return launch_server(self.tmp.mktemp("apiaryd") / "data")

    def take(self) -> Server:
        starting = self.ahead or self._launch()
        self.ahead = self._launch()
        return wait_server(starting)

    def retire(self, server: Server) -> None:
        if server.proc.poll() is None:
            server.proc.terminate()
        self.retired.append(server)

    def close(self) -> None:
        """Stop the one started ahead, if any, and wait for every retired one to end."""
        if self.ahead is not None:
            self.ahead.proc.terminate()
            self.retired.append(
                Server("", self.ahead.data_dir, "", self.ahead.proc, self.ahead.log)
            )
            self.ahead = None
        for server in self.retired:
            server.stop()
        self.retired.clear()


@dataclass
class Run:
    exit_code: int
    stdout: str
    stderr: str

    def __repr__(self) -> str:  # what pytest shows when an assertion fails
        return f"Run(exit={self.exit_code}\n--stdout--\n{self.stdout}\n--stderr--\n{self.stderr})"


@dataclass
class Ctl:
    """Runs ``apiaryctl ARGS`` in-process against one server."""

    server: Server
    home: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, input: str | None = None, **env: str) -> Run:
        base = {
            "APIARY_SERVER": self.server.url,
            "APIARY_TOKEN": self.server.token,
            "APIARY_CONFIG": str(self.home / "config.yaml"),
            "APIARY_DATA_DIR": str(self.home / "no-data-dir"),
            "APIARY_CELL": None,
            "APIARY_CONTEXT": None,  # --context sets it in-process; the runner restores it
        }
        merged = {**base, **self.env, **env}
        result = CliRunner().invoke(app, list(args), input=input, env=merged)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Run(result.exit_code, result.stdout, result.stderr)
