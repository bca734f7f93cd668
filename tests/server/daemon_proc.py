"""Run a real ``apiaryd`` subprocess on an ephemeral port and wait for its ready line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(r"apiaryd listening on (http://\S+) \(data dir (.+)\)")


@dataclass
class Apiaryd:
    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    lines: list[str] = field(default_factory=list)

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def terminate(self, timeout: float = 10.0) -> int:
        """SIGTERM and the exit status; one that does not exit in time has its asyncio tasks
        dumped (SIGUSR1) and killed, and the failure shows what it was waiting for."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1.0)
            self.proc.kill()
            self.proc.wait(10)
            tail = "".join(self.lines[-200:])
            raise AssertionError(f"apiaryd did not stop within {timeout}s:\n{tail}") from None

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def start(
    data_dir: Path, *args: str, timeout: float = 20.0, env: dict[str, str] | None = None
) -> Apiaryd:
    """``env`` is added to apiaryd's environment (ours, less every ``APIARY_*``)."""
    cmd = [
        sys.executable,
        "-m",
        "apiary.server.main",
        "--data-dir",
        str(data_dir),
        "--port",
        "0",
        "--log-level",
        "warning",
        *args,
    ]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("APIARY_")}
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**environ, **(env or {})},
    )
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = READY.search(line)
        if m:
            daemon = Apiaryd(proc, m.group(1), Path(m.group(2)), lines)
            threading.Thread(target=_drain, args=(proc, lines), daemon=True).start()
            return daemon
    proc.kill()
    proc.wait()
    raise AssertionError("apiaryd did not become ready:\n" + "".join(lines))


def _drain(proc: subprocess.Popen[str], lines: list[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
