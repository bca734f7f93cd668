"""A drone's stdio MCP servers (``spec.mcpServers[].command``, apiary/node/mcpstdio.py): started
by the node through the drone's launcher and sandbox, on first use, one per drone and server,
one MCP session kept across calls, started again after it died, gone when the drone stops.

Real processes (the test server is tests/interop/mcp_stdio_calc.py, built with the ``mcp``
SDK); the uid checks run as root, where the launcher really changes uid.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from apiary.errors import NotFound
from apiary.node.mcpstdio import ServerUnavailable
from apiary.node.runner import DroneRunner, RunnerSettings
from apiary.node.sandbox import NOBODY

CALC = Path(__file__).parents[1] / "interop" / "mcp_stdio_calc.py"
Obj = dict[str, Any]


def _runner(tmp_path: Path, servers: list[Obj], security: Obj | None = None) -> DroneRunner:
    limits = {"limits": {"memory": 2_000_000_000}}
    spec: Obj = {"runtime": {"command": ["cat"]}, "interface": {"type": "stdin"},
                 "mcpServers": servers, "resources": limits}  # fmt: skip
    if security is not None:
        spec["securityContext"] = security

    async def read_secret(name: str) -> Obj:
        if name != "calc":
            raise NotFound(f"Secret {name!r} not found")
        return {"data": {"greeting": base64.b64encode(b"hello from a Secret").decode()}}

    drone = {"metadata": {"uid": "u1", "name": "d-1", "namespace": "c"}, "spec": spec}
    settings = RunnerSettings(state_dir=str(tmp_path / "state"), work_root=str(tmp_path / "w"),
                              grace_period_seconds=2)  # fmt: skip
    (tmp_path / "w").mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    return DroneRunner(drone, settings=settings, read_secret=read_secret,
                       on_status=lambda *_: None)  # fmt: skip


def _calc(**extra: Any) -> Obj:
    ref = {"secretKeyRef": {"name": "calc", "key": "greeting"}}
    env = [{"name": "CALC_GREETING", "valueFrom": ref}]
    return {"name": "calc", "command": [sys.executable, str(CALC)], "env": env,
            "allowTools": ["*"], **extra}  # fmt: skip


def _status_ids(pid: int) -> tuple[str, str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in lines)
    return fields["Uid"].split()[0], fields["Gid"].split()[0], fields["Groups"].strip()


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read().decode()


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def _who(runner: DroneRunner) -> Obj:
    client = await runner.mcp_stdio.client("calc")
    result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    return dict(result.structured_content or {})


def test_the_server_runs_in_the_drones_sandbox_and_stops_with_it(tmp_path: Path) -> None:
    async def main() -> None:
        runner = _runner(tmp_path, [_calc()])
        assert runner.mcp_stdio.process("calc") is None  # started on first use, not before
        who = await _who(runner)
        pid = who["pid"]
        proc = runner.mcp_stdio.process("calc")
        assert proc is not None and proc.pid == pid
        assert who["greeting"] == "hello from a Secret" and who["keeperToken"] is False
        assert who["home"] == str(tmp_path / "w" / "c__d-1")  # the drone's private HOME
        if os.geteuid() == 0:  # as the drone's user, with no supplementary group
            assert (who["uid"], who["gid"], who["groups"]) == (NOBODY, NOBODY, [])
            assert _status_ids(pid) == (str(NOBODY), str(NOBODY), "")
        environ = _read(f"/proc/{pid}/environ").split("\0")
        assert not any(v.startswith("PYTEST") for v in environ)  # nothing of the node's env
        if proc.limits["memory"] == "rlimit":  # the drone's memory limit
            assert "2000000000" in _read(f"/proc/{pid}/limits")
        else:
            assert proc.limits["memory"] == "cgroup" and proc.cgroup is not None
            assert proc.cgroup.endswith("c__d-1.mcp-calc")
            assert _read(f"{proc.cgroup}/memory.max").strip() == "2000000000"
        # one process and one session for every call
        assert (await _who(runner))["pid"] == pid
        calls = [(await runner.mcp_stdio.client("calc")).call_tool("add", {"a": i, "b": 1})
                 for i in range(5)]  # fmt: skip
        sums = [r.content[0].text for r in await asyncio.gather(*calls)]
        assert sums == ["1", "2", "3", "4", "5"] and runner.mcp_stdio.process("calc") is proc
        # died: started again on the next use
        os.kill(pid, signal.SIGKILL)
        for _ in range(250):  # the node has seen it exit (a call racing the death fails)
            if runner.mcp_stdio.process("calc") is None:
                break
            await asyncio.sleep(0.02)
        again = (await _who(runner))["pid"]
        assert again != pid and not _gone(again)
        await runner.stop()
        assert _gone(again) and runner.mcp_stdio.process("calc") is None
        assert not list((tmp_path / "state" / "pids").glob("*.pid"))  # orphan records forgotten
        with pytest.raises(ServerUnavailable, match="stopping"):
            await runner.mcp_stdio.client("calc")

    asyncio.run(main())


@pytest.mark.skipif(os.geteuid() != 0, reason="changing uid needs root")
def test_the_server_takes_the_drones_security_context(tmp_path: Path) -> None:
    async def main() -> None:
        runner = _runner(tmp_path, [_calc()], {"runAsUser": 4242, "runAsGroup": 4343})
        who = await _who(runner)
        assert _status_ids(who["pid"])[:2] == ("4242", "4343")
        await runner.stop()
        assert _gone(who["pid"])

    asyncio.run(main())


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    async def main() -> None:
        runner = _runner(tmp_path, [
            {"name": "calc", "command": ["no-such-mcp-server"]},
            {"name": "dies", "command": [sys.executable, "-c", "import sys; sys.exit(3)"]},
            {"name": "nosecret", "command": [sys.executable, str(CALC)],
             "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}]},
            {"name": "mute", "command": [sys.executable, "-c",
                                         "import os, time; os.close(1); time.sleep(60)"]},
        ])  # fmt: skip
        with pytest.raises(ServerUnavailable, match='could not start: executable "no-such'):
            await runner.mcp_stdio.client("calc")
        with pytest.raises(ServerUnavailable, match="did not answer the MCP handshake"):
            await runner.mcp_stdio.client("dies")
        with pytest.raises(ServerUnavailable, match=r"mcpServers\[2\]\.env\[0\].*'gone'"):
            await runner.mcp_stdio.client("nosecret")
        with pytest.raises(ServerUnavailable, match="did not answer the MCP handshake"):
            await runner.mcp_stdio.client("mute")  # its stdout closed: stopped, not left over
        assert runner.mcp_stdio.process("mute") is None
        assert not list((tmp_path / "state" / "pids").glob("*.pid"))
        await runner.stop()

    asyncio.run(main())
