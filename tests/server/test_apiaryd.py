"""End to end against a real ``apiaryd`` process: first start, restart, 410, kill -9."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import stat
import time
from pathlib import Path

import httpx
import pytest

from services import fresh_postgres_url

from .daemon_proc import start

PLAINTEXT = "sk-e2e-plaintext-4c1d"


def test_first_start_then_restart_keeps_token_key_and_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = start(data)
    try:
        for name in ("admin.token", "secret.key"):
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600
        token = d.token
        with httpx.Client(base_url=d.url, timeout=10) as c:
            assert c.get("/healthz").status_code == 200
            assert c.get("/readyz").status_code == 200
            assert c.get("/api/v1/cells").status_code == 401
            assert c.get("/api/v1/cells", headers={"Authorization": "Bearer x"}).status_code == 401
            h = d.headers
            assert c.get("/api/v1/whoami", headers=h).json()["user"] == "admin"
            assert c.get("/api/v1/cells/default", headers=h).status_code == 200
            r = c.post(
                "/api/v1/cells/default/secrets",
                headers=h,
                json={"metadata": {"name": "k"}, "stringData": {"key": PLAINTEXT}},
            )
            assert r.status_code == 201 and r.json()["data"] == {"key": "<redacted>"}
            assert "apiary_api_requests_total" in c.get("/metrics", headers=h).text
    finally:
        assert d.terminate() == 0  # graceful: exit code 0 on SIGTERM
    raw = b"".join(p.read_bytes() for p in data.iterdir() if p.name.startswith("apiary.db"))
    assert b"secrets" in raw or b"Secret" in raw
    assert PLAINTEXT.encode() not in raw and base64.b64encode(PLAINTEXT.encode()) not in raw

    d = start(data)
    try:
        assert d.token == token
        with httpx.Client(base_url=d.url, headers=d.headers, timeout=10) as c:
            r = c.get("/api/v1/cells/default/secrets/k", params={"reveal": "true"})
            assert base64.b64decode(r.json()["data"]["key"]).decode() == PLAINTEXT
    finally:
        assert d.terminate() == 0


def test_watch_from_a_compacted_version_is_410(tmp_path: Path) -> None:
    d = start(tmp_path, "--changelog-retention", "5", "--compact-interval", "0.1")
    try:
        with httpx.Client(base_url=d.url, headers=d.headers, timeout=10) as c:
            for i in range(20):
                c.post(
                    "/api/v1/cells/default/sessions",
                    json={"metadata": {"name": f"s{i}"}, "spec": {"hiveRef": "h"}},
                )
            status, body = 0, {}
            for _ in range(100):
                # Streamed: until compaction has run, the watch answers 200 and never ends.
                with c.stream(
                    "GET",
                    "/api/v1/cells/default/sessions",
                    params={"watch": "true", "resourceVersion": "1"},
                ) as r:
                    status = r.status_code
                    if status == 410:
                        body = json.loads(r.read())
                        break
                time.sleep(0.05)
            assert status == 410 and body["reason"] == "Gone"
    finally:
        assert d.terminate() == 0


def test_bad_flags_are_a_usage_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    # (flags, exit code, what stderr says); run side by side: each is an interpreter start
    cases = [
        (["--port", "99999"], 2, "apiaryd: error"),
        (["--max-body-bytes", "0"], 2, "apiaryd: error"),
        (["--log-level", "loud"], 2, "apiaryd: error"),
        (["--store", "mysql://x"], 1, "unknown store URL scheme"),
    ]
    apiaryd = [sys.executable, "-m", "apiary.server.main"]
    procs = [
        subprocess.Popen(
            [*apiaryd, "--data-dir", str(tmp_path / str(i)), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (args, _, _) in enumerate(cases)
    ]
    try:
        for (args, code, said), p in zip(cases, procs, strict=True):
            _, err = p.communicate(timeout=30)
            assert p.returncode == code and said in err and "Traceback" not in err, (args, err)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


async def _burst(url: str, headers: dict[str, str], acked: list[str], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=5) as c:

        async def worker(w: int) -> None:
            i = 0
            while not stop.is_set():
                name = f"w{w}-{i}"
                i += 1
                try:
                    r = await c.post(
                        "/api/v1/cells/default/sessions",
                        json={"metadata": {"name": name}, "spec": {"hiveRef": "h"}},
                    )
                except httpx.HTTPError:
                    return  # the server died under us
                if r.status_code == 201:
                    acked.append(name)

        await asyncio.gather(*(worker(w) for w in range(8)))


async def _kill_during_burst(tmp_path: Path, *store: str) -> None:
    d = start(tmp_path, *store)
    acked: list[str] = []
    stop = asyncio.Event()
    burst = asyncio.create_task(_burst(d.url, d.headers, acked, stop))
    while len(acked) < 150:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(d.kill9)
    stop.set()
    await burst
    assert len(acked) >= 150
    d = start(tmp_path, *store)
    try:
        async with httpx.AsyncClient(base_url=d.url, headers=d.headers, timeout=10) as c:
            r = await c.get("/api/v1/cells/default/sessions")
            present = {i["metadata"]["name"] for i in r.json()["items"]}
        lost = set(acked) - present
        assert not lost, f"{len(lost)} acknowledged creates lost: {sorted(lost)[:5]}"
    finally:
        assert d.terminate() == 0


@pytest.mark.slow
async def test_kill9_during_a_burst_loses_no_acknowledged_create_sqlite(tmp_path: Path) -> None:
    await _kill_during_burst(tmp_path)


@pytest.mark.slow
@pytest.mark.services
async def test_kill9_during_a_burst_loses_no_acknowledged_create_postgres(tmp_path: Path) -> None:
    async with fresh_postgres_url() as url:
        await _kill_during_burst(tmp_path, "--store", url)


def test_sigusr1_dumps_every_asyncio_task_and_apiaryd_runs_on(tmp_path: Path) -> None:
    d = start(tmp_path)
    try:
        d.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not any("--- task" in line for line in d.lines) and time.monotonic() < deadline:
            time.sleep(0.05)
        text = "".join(d.lines)
        assert "asyncio tasks" in text and "--- task" in text, text[-2000:]
        assert d.proc.poll() is None  # a diagnostic, not a stop
    finally:
        assert d.terminate() == 0
