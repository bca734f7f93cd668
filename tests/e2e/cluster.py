"""Real processes for end-to-end tests: apiaryd (killable, restartable) and `apiaryd node` agents.

Every drone process carries ``APIARY_CELL`` in its environment; each test uses a cell of its own,
so :func:`agent_processes` reads the real process table to tell what a test's drones left running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from apiary.client import ApiClient

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "examples" / "seed-manifests"  # identical to the originals
_LISTENING = re.compile(r'"url": "(http://[^"]+)"|\burl=(http://\S+)')
"""apiaryd's ``apiaryd listening on …`` log line, JSON or console: its ``url`` key."""
ECHO = ["/bin/sh", "-c", 'while IFS= read -r line; do echo "Echo: $line"; done']


def _apiaryd() -> list[str]:
    exe = Path(sys.executable).parent / "apiaryd"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "apiary.server.main"]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Apiaryd:
    """One apiaryd process on a data dir; ``kill()`` is SIGKILL, ``start()`` starts it again."""

    data_dir: Path
    extra: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    starts: int = 0

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.{self.starts}.log"

    def start(self, timeout: float = 30.0) -> Apiaryd:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*_apiaryd(), "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                 "--port", "0", "--log-format", "console", *self.extra],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

        def listening() -> str | None:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"apiaryd exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            m = _LISTENING.search(self.log.read_text(errors="replace"))
            return (m.group(1) or m.group(2)) if m else None

        self.url = wait_for(listening, timeout, "apiaryd to listen")

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, "/readyz")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, cell: str) -> ApiClient:
        return ApiClient(self.url, self.token, cell)


@dataclass
class NodeProc:
    """``apiaryd node`` as its own process."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


_retired: list[Apiaryd] = []


def retire(server: Apiaryd) -> None:
    """End a test's apiaryd without waiting (SIGTERM: it stops its own drones), so the next
    test starts while it does; :func:`reap_retired` waits for every one (the conftest, once the
    directory's last test is done). For fixtures: a test that stops one to start it again
    calls :meth:`Apiaryd.stop`."""
    if server.proc is not None and server.proc.poll() is None:
        server.proc.terminate()
    _retired.append(server)


def reap_retired() -> None:
    while _retired:
        _retired.pop().stop()


def start_node(server: Apiaryd, name: str, state_dir: Path, *extra: str) -> NodeProc:
    log = state_dir.parent / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*_apiaryd(), "node", "--server", server.url, "--token", server.token,
             "--name", name, "--data-dir", str(state_dir), "--heartbeat-seconds", "1", *extra],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    wait_for(lambda: "joined" in log.read_text(errors="replace") or proc.poll() is not None,
              20, f"node {name} to join")  # fmt: skip
    assert proc.poll() is None, log.read_text(errors="replace")
    return NodeProc(name, proc, log)


def new_cell() -> str:
    return f"e2e-{uuid.uuid4().hex[:8]}"


def agent_processes(cell: str) -> list[psutil.Process]:
    """Live processes (any parent) whose environment says they belong to ``cell``."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get("APIARY_CELL") == cell:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def wait_no_agent_processes(cell: str, timeout: float = 15.0) -> None:
    wait_for(lambda: not agent_processes(cell), timeout, f"no agent process of cell {cell}")


def agentspec(cell: str, name: str, command: list[str] | None = None, cpu: int = 50) -> Obj:
    return {
        "apiVersion": "apiary.io/v1", "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": cell},
        "spec": {"runtime": {"command": command or ECHO},
                 "interface": {"type": "stdin", "format": "text"},
                 "resources": {"requests": {"cpu": cpu, "memory": 8_000_000}}},
    }  # fmt: skip


def hive(cell: str, name: str, agent: str, replicas: int) -> Obj:
    return {
        "apiVersion": "apiary.io/v1", "kind": "Hive",
        "metadata": {"name": name, "namespace": cell},
        "spec": {"pattern": "pipeline",
                 "stages": [{"name": "work", "agentRef": agent, "replicas": replicas}]},
    }  # fmt: skip


def drones(client: ApiClient, cell: str) -> list[Obj]:
    return list(client.list("Drone", cell)["items"])


def is_ready(d: Obj) -> bool:
    st = d.get("status") or {}
    return bool(st.get("ready")) and st.get("phase") == "Running"


def wait_drones(
    client: ApiClient, cell: str, predicate: Callable[[list[Obj]], bool], timeout: float, what: str
) -> list[Obj]:
    last: list[Obj] = []

    def check() -> list[Obj] | None:
        nonlocal last
        try:
            last = drones(client, cell)
        except Exception:  # the server may be restarting
            return None
        return last if predicate(last) else None

    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            summary = [(d["metadata"]["name"], (d.get("status") or {}).get("phase"),
                        (d.get("status") or {}).get("nodeName"),
                        (d.get("status") or {}).get("message")) for d in last]  # fmt: skip
            pytest.fail(f"timed out after {timeout}s waiting for {what}: {summary}")
        time.sleep(0.05)


def n_ready(n: int) -> Callable[[list[Obj]], bool]:
    return lambda ds: len(ds) == n and all(map(is_ready, ds))


TEST_STREAM_PREFIXES = ("E2E", "CRASH")


async def drop_stale_test_streams(nats_url: str, older_than: float = 600.0) -> list[str]:
    """Delete JetStream streams an earlier, killed test run left behind: they keep `apiary.>`
    and would make every later apiaryd on that server fail with "subjects overlap". Only streams
    named by these tests and older than ``older_than`` seconds (a parallel run keeps its own)."""
    from datetime import UTC, datetime

    import nats

    nc = await nats.connect(nats_url)
    dropped = []
    try:
        js = nc.jetstream()
        for info in await js.streams_info():
            name = info.config.name or ""
            created = getattr(info, "created", None)
            age = (datetime.now(UTC) - created).total_seconds() if created else older_than
            if name.startswith(TEST_STREAM_PREFIXES) and age >= older_than:
                await js.delete_stream(name)
                dropped.append(name)
    finally:
        await nc.close()
    return dropped


def run_session(
    c: ApiClient, cell: str, hive: str, payload: Any, type: str | None = "task",
    timeout: float = 30,
) -> Any:  # fmt: skip
    """Create a session of ``hive``, send one input (of ``type``; None: the server's default),
    wait for its final (an error fails the test) and return the final's payload."""
    s = c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
                  "metadata": {"generateName": f"{hive}-", "namespace": cell},
                  "spec": {"hiveRef": hive}})  # fmt: skip
    base = f"/api/v1/cells/{cell}/sessions/{s['metadata']['name']}"
    body: dict[str, Any] = (
        {"payload": payload} if type is None else {"payload": payload, "type": type}
    )
    input_id = c.request("POST", f"{base}/messages", json_body=body).body["id"]
    after, deadline = 0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = c.request("GET", f"{base}/messages", params={"after": str(after), "wait": "5"})
        for entry in got.body["items"]:
            after = max(after, entry["seq"])
            if entry["kind"] in ("final", "error") and entry.get("parent") == input_id:
                assert entry["kind"] == "final", entry
                return entry["message"]["payload"]
    pytest.fail(f"no final output from hive/{hive} within {timeout}s")
