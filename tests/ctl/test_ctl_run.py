"""``apiaryctl run`` and ``apiaryctl session …`` end to end: a real apiaryd subprocess whose
embedded node runs real agent processes (examples/agents), driven through the CLI."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ctlkit import REPO, Ctl, Server

CELL = "runs"
AGENTS = REPO / "examples" / "agents"
FAILING = 'while IFS= read -r line; do echo \'{"type":"error","payload":"cannot do that"}\'; done'


def agentspec(name: str, command: list[str], fmt: str = "waggle", **runtime: Any) -> dict:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "AgentSpec",
        "metadata": {"name": name, "namespace": CELL},
        "spec": {
            "runtime": {"command": command, **runtime},
            "interface": {"type": "stdin", "format": fmt},
        },
    }


def hive(name: str, stages: list[tuple[str, str]], **spec: Any) -> dict:
    body = {"pattern": "pipeline", "stages": [{"name": s, "agentRef": a} for s, a in stages]}
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": name, "namespace": CELL},
        "spec": {**body, **spec},
    }


@pytest.fixture(scope="module")
def hives(shared_server: Server) -> Iterator[Server]:
    """Five hives with real agents, Ready before the first test of the module."""
    py = sys.executable
    objects = [
        agentspec("upper", [py, str(AGENTS / "upper.py")]),
        agentspec("same", [py, str(AGENTS / "echo.py")]),
        agentspec(
            "slow", [py, str(AGENTS / "slow.py")], env=[{"name": "SLOW_SECONDS", "value": "5"}]
        ),
        agentspec(
            "echo", ["/bin/sh", "-c", 'while IFS= read -r l; do echo "Echo: $l"; done'], "text"
        ),
        agentspec("failing", ["/bin/sh", "-c", FAILING]),
        hive("pipe", [("up", "upper"), ("echo", "echo")]),
        hive("same", [("only", "same")]),
        hive("slow", [("only", "slow")]),
        hive("broken", [("only", "failing")], routing={"retryPolicy": {"maxRetries": 0}}),
    ]
    with shared_server.client(cell=CELL) as client:
        for obj in objects:
            client.apply(obj)
        deadline = time.monotonic() + 30
        while True:
            drones = client.list("drones", CELL)["items"]
            ready = [d for d in drones if (d.get("status") or {}).get("ready")]
            if len(ready) == 5:
                break
            assert time.monotonic() < deadline, f"drones not ready: {drones}"
            time.sleep(0.05)
    time.sleep(0.3)  # a worker subscribes to its stage right after reporting Ready
    yield shared_server


@pytest.fixture
def run(hives: Server, tmp_path: Path) -> Ctl:
    return Ctl(hives, tmp_path, {"APIARY_CELL": CELL})


def test_run_prints_the_final_output_of_a_pipeline(run: Ctl) -> None:
    r = run("run", "hive/pipe", "--input", "hello world")
    assert r.exit_code == 0, r
    assert r.stdout == "Echo: HELLO WORLD\n"
    assert r.stderr == ""  # no terminal: no spinner, nothing but data
    jobs = json.loads(run("get", "sessions", "-l", "apiary.io/job=true", "-o", "json").stdout)
    assert any(j["spec"]["input"] == "hello world" for j in jobs["items"])


def test_text_stays_text_unless_json_is_asked(run: Ctl, tmp_path: Path) -> None:
    r = run("run", "hive/same", "-", input='{"a": 1}\n')
    assert r.exit_code == 0, r
    assert r.stdout == '{"a": 1}\n'  # a string, printed as is
    r = run("run", "hive/same", "-", "--json", input='{"a": [1, 2]}')
    assert r.exit_code == 0, r
    assert json.loads(r.stdout) == {"a": [1, 2]}  # an object, printed as JSON
    f = tmp_path / "in.txt"
    f.write_text("from a file\n")
    r = run("run", "hive/pipe", "--input-file", str(f))
    assert r.exit_code == 0 and r.stdout == "Echo: FROM A FILE\n", r
    r = run("run", "hive/pipe", "-i", "x", "-o", "json")
    body = json.loads(r.stdout)
    assert body["kind"] == "final" and body["parent"] == body["input"]
    assert body["message"]["payload"] == "Echo: X" and body["session"].startswith("job-")


def test_a_failing_flow_exits_1_with_the_reason(run: Ctl) -> None:
    r = run("run", "hive/broken", "-i", "anything")
    assert r.exit_code == 1, r
    assert r.stdout == ""
    assert "hive/broken failed" in r.stderr
    assert "DeadLettered" in r.stderr and "cannot do that" in r.stderr


def test_timeout_exits_1_naming_the_hive(run: Ctl) -> None:
    t0 = time.monotonic()
    r = run("run", "hive/slow", "-i", "zzz", "--timeout", "500ms")
    assert r.exit_code == 1, r
    assert "timed out after 500ms waiting for hive/slow" in r.stderr
    assert r.stdout == ""
    assert time.monotonic() - t0 < 4


def test_run_errors_and_usage(run: Ctl) -> None:
    r = run("run", "hive/nothere", "-i", "x")
    assert r.exit_code == 1 and "hive 'nothere' not found" in r.stderr, r
    for args in (
        ["run", "hive/pipe"],  # no input
        ["run", "hive/pipe", "-i", "x", "-"],  # two inputs
        ["run", "hive/pipe", "-i", "{nope", "--json"],
        ["run", "hive/pipe", "-i", "x", "--timeout", "soon"],
        ["run", "drone/pipe", "-i", "x"],
        ["run", "hive/pipe", "--input-file", "/no/such/file"],
    ):
        r = run(*args)
        assert r.exit_code == 2, (args, r)
        assert r.stderr.startswith("error:") and r.stdout == ""


def test_session_commands_and_run_into_a_session(run: Ctl) -> None:
    r = run("session", "create", "hive/pipe", "--name", "talk")
    assert r.exit_code == 0 and r.stdout == "session/talk created\n", r
    r = run("session", "send", "talk", "first")
    assert r.exit_code == 0, r
    first_id = r.stdout.strip()
    r = run("run", "hive/pipe", "--session", "talk", "-i", "second")
    assert r.exit_code == 0 and r.stdout == "Echo: SECOND\n", r
    r = run("session", "transcript", "talk")
    assert r.exit_code == 0, r
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["SEQ", "KIND", "STAGE", "DRONE", "LATENCY", "TOKENS", "PAYLOAD"]
    rows = [line.split() for line in lines[1:]]
    assert [row[1] for row in rows].count("final") == 2
    assert [row[1] for row in rows].count("input") == 2
    output_rows = [row for row in rows if row[1] == "output"]
    assert [row[2] for row in output_rows][:2] == ["up", "echo"]
    assert all(row[3].startswith("pipe-") and row[4].endswith("ms") for row in output_rows)
    body = json.loads(run("session", "transcript", "talk", "-o", "json").stdout)
    finals = [e for e in body["items"] if e["kind"] == "final"]
    assert finals[0]["parent"] == first_id
    assert finals[0]["message"]["payload"] == "Echo: FIRST"
    r = run("session", "get", "talk")
    assert r.stdout.splitlines()[1].split()[:3] == ["talk", "pipe", "Running"], r
    r = run("run", "hive/same", "--session", "talk", "-i", "x")
    assert r.exit_code == 1 and "hive/pipe, not hive/same" in r.stderr, r
    r = run("session", "close", "talk")
    assert r.exit_code == 0 and r.stdout == "session/talk closed\n", r
    r = run("session", "send", "talk", "late")
    assert r.exit_code == 1 and "Closed" in r.stderr, r
    r = run("session", "get", "nobody")
    assert r.exit_code == 1 and "not found" in r.stderr


def test_progress_shows_the_stage_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from apiary.ctl import output
    from apiary.ctl.commands import run as run_module

    quiet = run_module.Progress("hive/x")
    assert quiet.status is None  # stderr is no terminal under the test runner
    with quiet:
        quiet.stage("up")  # harmless no-ops
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=80)
    monkeypatch.setattr(output, "err_console", lambda: console)
    with run_module.Progress("hive/x") as shown:
        assert shown.status is not None
        shown.stage("up")
        assert "hive/x: stage up working" in str(shown.status.status)
        shown.retrying("up", {"reason": "ResponseTimeout"})
        assert "failed (ResponseTimeout), retrying" in str(shown.status.status)
