"""``apiaryctl run`` and ``apiaryctl session …`` end to end: a real apiaryd subprocess whose
embedded node runs real agent processes (examples/agents), driven through the CLI."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ctlkit import REPO, Ctl, Server

from apiary import errors
from apiary.client import ApiClient
from apiary.ctl.commands.session import SessionCalls

CELL = "runs"
Obj = dict[str, Any]
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
    header = ["SEQ", "KIND", "STAGE", "DRONE", "LATENCY", "TOKENS", "COST", "PAYLOAD"]
    assert lines[0].split() == header
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


class LosingTransport(httpx.BaseTransport):
    """Forwards every request to apiaryd, then loses the answer of the first ``lose`` POSTs to a
    path ending in ``suffix`` — what a reset connection after the request was sent looks like."""

    def __init__(self, suffix: str, lose: int, error: type[httpx.TransportError]) -> None:
        self.inner = httpx.HTTPTransport()
        self.suffix, self.lose, self.error = suffix, lose, error
        self.posts = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or not request.url.path.endswith(self.suffix):
            return self.inner.handle_request(request)
        self.posts += 1
        if self.error is httpx.ConnectError:  # refused: nothing reaches the server
            raise httpx.ConnectError("connection refused (simulated)", request=request)
        response = self.inner.handle_request(request)
        response.read()
        response.close()
        if self.lose > 0:
            self.lose -= 1
            raise self.error("connection reset after the request was sent (simulated)")
        return response


def finals(calls: SessionCalls, session: str) -> list[Obj]:
    after, found = 0, []
    deadline = time.monotonic() + 20
    while not found and time.monotonic() < deadline:
        body = calls.poll(session, after, 2.0)
        found += [e for e in body["items"] if e["kind"] == "final"]
        after = body["last"]
    return found


def jobs_of(server: Server, payload: str) -> list[Obj]:
    with server.client(cell=CELL) as c:
        items = c.list("sessions", CELL, selector="apiary.io/job=true")["items"]
    return [j for j in items if j["spec"].get("input") == payload]


def test_a_job_whose_answer_is_lost_is_posted_again_and_runs_once(hives: Server) -> None:
    """What ``apiaryctl run`` does when the connection drops after the POST: it posts again with
    the same id, and apiaryd answers with the job the first POST made."""
    lossy = LosingTransport("/jobs", 2, httpx.ReadError)
    with ApiClient(hives.url, hives.token, CELL, transport=lossy) as client:
        calls = SessionCalls(client, CELL)
        job = calls.job("pipe", "lost once", id="ctl-retry-1")
        assert lossy.posts == 3 and job["input"] == "ctl-retry-1"
        (made,) = jobs_of(hives, "lost once")
        assert made["metadata"]["name"] == job["id"]
        (final,) = finals(calls, job["id"])
        assert final["parent"] == "ctl-retry-1"
        assert final["message"]["payload"] == "Echo: LOST ONCE"
        # A message whose answer is lost is sent again too, and journaled once.
        lossy.suffix, lossy.lose = "/messages", 1
        session = calls.create("same")["metadata"]["name"]
        sent = calls.send(session, "one message")
        transcript = calls.transcript(session)["items"]
        assert [e["id"] for e in transcript if e["kind"] == "input"] == [sent["id"]]


def test_the_retries_give_up_and_a_refused_connection_is_not_retried(hives: Server) -> None:
    lossy = LosingTransport("/jobs", 10, httpx.ReadTimeout)
    client = ApiClient(hives.url, hives.token, CELL, transport=lossy)
    with client, pytest.raises(errors.Unavailable, match=r"lost connection|did not answer"):
        SessionCalls(client, CELL).job("pipe", "lost for good", id="ctl-retry-2")
    assert lossy.posts == 4  # the first try and three more
    assert len(jobs_of(hives, "lost for good")) == 1  # every try met the same job
    refused = LosingTransport("/jobs", 0, httpx.ConnectError)
    client = ApiClient(hives.url, hives.token, CELL, transport=refused)
    with client, pytest.raises(errors.Unavailable, match="cannot reach"):
        SessionCalls(client, CELL).job("pipe", "never sent")
    assert refused.posts == 1
