"""``/metrics`` of a real apiaryd after one session went through a two-stage hive: scraped with a
metrics-reader token, parsed by prometheus_client, checked by ``promtool check metrics``; a cell
token and no token are refused (docs/observability.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from apiary.ctl.main import app as apiaryctl
from e2e.cluster import ECHO, Apiaryd, agentspec, is_ready, new_cell, wait_drones

Obj = dict[str, Any]
pytestmark = pytest.mark.slow
BROKEN = [sys.executable, "-c", """
import json, sys
for line in sys.stdin:
    json.loads(line)
    print(json.dumps({"type": "error", "payload": {"message": "model unavailable"}}), flush=True)
"""]  # fmt: skip
COUNTING = [sys.executable, "-c", """
import json, sys
for line in sys.stdin:
    json.loads(line)
    print(json.dumps({"type": "result", "payload": "done",
                      "usage": {"promptTokens": 7, "completionTokens": 3}}), flush=True)
"""]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apiaryd]:
    s = Apiaryd(tmp_path_factory.mktemp("metrics") / "data").start()
    yield s
    s.stop()


def token(server: Apiaryd, name: str, spec: Obj) -> str:
    r = httpx.post(
        f"{server.url}/api/v1/tokens",
        headers={"Authorization": f"Bearer {server.token}"},
        json={"apiVersion": "apiary.io/v1", "kind": "Token", "metadata": {"name": name},
              "spec": spec},
    )  # fmt: skip
    assert r.status_code == 201, r.text
    return str(r.json()["status"]["token"])


def scrape(server: Apiaryd, bearer: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    return httpx.get(f"{server.url}/metrics", headers=headers, timeout=10)


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for ls, v in found.get(name, []) if all(ls.get(k) == w for k, w in labels.items()))


def run_one_session(server: Apiaryd, cell: str) -> None:
    with server.client(cell) as c:
        c.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}})
        c.create(agentspec(cell, "echo", ECHO))
        stages = [{"name": "one", "agentRef": "echo"}, {"name": "two", "agentRef": "echo"}]
        c.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                  "metadata": {"name": "h", "namespace": cell},
                  "spec": {"pattern": "pipeline", "stages": stages}})  # fmt: skip
        wait_drones(c, cell, lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 30, "drones")
        time.sleep(0.2)  # a Ready drone's worker subscribes right after its status is written
        c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
                  "metadata": {"name": "s1", "namespace": cell},
                  "spec": {"hiveRef": "h", "input": "hello"}})  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = c.get("Session", "s1", cell).get("status") or {}
            if status.get("output"):
                assert "Echo: Echo: hello" in str(status["output"])
                return
            time.sleep(0.05)
    pytest.fail("the session gave no output within 20 s")


def test_a_metrics_reader_scrapes_what_one_session_did(server: Apiaryd, tmp_path: Path) -> None:
    cell = new_cell()
    run_one_session(server, cell)
    reader = token(server, "prometheus", {"role": "metrics-reader"})
    r = scrape(server, reader)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    found = samples(r.text)

    stage = {"cell": cell, "hive": "h"}
    assert value(found, "apiary_session_inputs_total", **stage) == 1
    for name in ("one", "two"):
        where = {**stage, "stage": name}
        assert value(found, "apiary_stage_dispatches_total", **where) == 1
        assert value(found, "apiary_stage_messages_total", **where, outcome="ok") == 1
        assert value(found, "apiary_stage_hop_duration_seconds_count", **where) == 1
        assert value(found, "apiary_stage_queue_wait_seconds_count", **where) == 1
        assert value(found, "apiary_agent_duration_seconds_count", **where) == 1
        assert value(found, "apiary_drones", **where, phase="Running") == 1
        assert value(found, "apiary_drone_restarts_total", **where) == 0
        assert value(found, "apiary_stage_backlog_messages", **where) == 0
    assert value(found, "apiary_journal_commit_duration_seconds_count", result="ok") >= 3
    assert value(found, "apiary_bus_publish_duration_seconds_count", result="ok") >= 2
    assert value(found, "apiary_sessions", **stage) == 1
    assert value(found, "apiary_dead_letters_open", cell=cell) == 0
    for standard in ("process_cpu_seconds_total", "process_resident_memory_bytes", "python_info"):
        assert standard in found, standard
    assert value(found, "apiary_api_requests_total") > 0
    # Bounded labels: no session or message ids anywhere.
    for series in found.values():
        for labels, _ in series:
            assert "session" not in labels and "s1" not in labels.values()

    accept = "application/openmetrics-text; version=1.0.0"
    om = httpx.get(f"{server.url}/metrics", timeout=10,
                   headers={"Authorization": f"Bearer {reader}", "Accept": accept})  # fmt: skip
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.endswith("# EOF\n") and om.text.count("# EOF") == 1
    names = {f.name for f in om_families(om.text)}
    assert {"apiary_stage_messages", "apiary_stage_hop_duration_seconds", "process_cpu_seconds",
            "apiary_drones", "apiary_api_requests"} <= names  # fmt: skip

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus; .ci/run does)")
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=r.text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_cell_token_a_node_token_and_no_token_may_not_scrape(server: Apiaryd) -> None:
    viewer = token(server, "a-viewer", {"role": "viewer", "cell": "default"})
    r = scrape(server, viewer)
    assert r.status_code == 403
    assert "may not get Metrics" in r.json()["message"]
    node = token(server, "a-node", {"role": "node", "node": "n1"})
    assert scrape(server, node).status_code == 403
    assert scrape(server, None).status_code == 401
    assert scrape(server, server.token).status_code == 200  # cluster-admin may, too


def test_a_metrics_reader_reads_nothing_else(server: Apiaryd) -> None:
    reader = token(server, "reader-2", {"role": "metrics-reader"})
    headers = {"Authorization": f"Bearer {reader}"}
    for path in ("/api/v1/cells", "/api/v1/cells/default/sessions", "/api/v1/tokens"):
        assert httpx.get(f"{server.url}{path}", headers=headers).status_code == 403, path
    r = httpx.post(
        f"{server.url}/api/v1/tokens", headers={"Authorization": f"Bearer {server.token}"},
        json={"apiVersion": "apiary.io/v1", "kind": "Token", "metadata": {"name": "bad"},
              "spec": {"role": "metrics-reader", "cell": "default"}},
    )  # fmt: skip
    assert r.status_code == 422 and "spec.cell" in r.text


def test_a_failing_stage_counts_its_retry_dead_letter_and_reason(server: Apiaryd) -> None:
    cell = new_cell()
    retry = {"maxRetries": 1, "initialDelaySeconds": 0.05, "maxDelaySeconds": 0.1}
    with server.client(cell) as c:
        c.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}})
        c.create(agentspec(cell, "echo", ECHO))
        broken = agentspec(cell, "broken", BROKEN)
        broken["spec"]["interface"]["format"] = "waggle"
        c.create(broken)
        stages = [{"name": "prep", "agentRef": "echo"}, {"name": "work", "agentRef": "broken"}]
        c.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                  "metadata": {"name": "h", "namespace": cell},
                  "spec": {"pattern": "pipeline", "stages": stages,
                           "routing": {"retryPolicy": retry}}})  # fmt: skip
        wait_drones(c, cell, lambda ds: len(ds) == 2 and all(map(is_ready, ds)), 30, "drones")
        time.sleep(0.2)
        c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
                  "metadata": {"name": "s1", "namespace": cell},
                  "spec": {"hiveRef": "h", "input": "hello"}})  # fmt: skip
    reader = token(server, "prometheus-dl", {"role": "metrics-reader"})
    work = {"cell": cell, "hive": "h", "stage": "work"}
    deadline = time.monotonic() + 20
    while True:  # the store snapshot is reused for 5 s: poll until it shows the dead letter
        found = samples(scrape(server, reader).text)
        if value(found, "apiary_dead_letters_open", cell=cell, phase="Pending") == 1:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no dead letter counted: {found.get('apiary_dead_letters_open')}")
        time.sleep(0.5)
    assert value(found, "apiary_stage_messages_total", **work, outcome="retry") == 1
    assert value(found, "apiary_stage_messages_total", **work, outcome="dead_letter") == 1
    assert value(found, "apiary_stage_errors_total", **work, reason="AgentError") == 2
    assert value(found, "apiary_stage_dispatches_total", **work) == 2
    assert value(found, "apiary_stage_messages_total", cell=cell, stage="prep", outcome="ok") == 1
    assert value(found, "apiary_sessions", cell=cell, phase="Failed") == 1


def test_tokens_an_agent_reports_are_counted_by_stage(server: Apiaryd) -> None:
    cell = new_cell()
    with server.client(cell) as c:
        c.create({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}})
        counting = agentspec(cell, "counting", COUNTING)
        counting["spec"]["interface"]["format"] = "waggle"
        c.create(counting)
        c.create({"apiVersion": "apiary.io/v1", "kind": "Hive",
                  "metadata": {"name": "h", "namespace": cell},
                  "spec": {"pattern": "pipeline",
                           "stages": [{"name": "llm", "agentRef": "counting"}]}})  # fmt: skip
        wait_drones(c, cell, lambda ds: len(ds) == 1 and all(map(is_ready, ds)), 30, "drone")
        time.sleep(0.2)
        c.create({"apiVersion": "apiary.io/v1", "kind": "Session",
                  "metadata": {"name": "s1", "namespace": cell},
                  "spec": {"hiveRef": "h", "input": "hello"}})  # fmt: skip
    reader = token(server, "prometheus-tokens", {"role": "metrics-reader"})
    where = {"cell": cell, "hive": "h", "stage": "llm", "model": ""}
    deadline = time.monotonic() + 20
    while True:
        found = samples(scrape(server, reader).text)
        if value(found, "apiary_llm_tokens_total", **where, type="completion") == 3:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"no tokens counted: {found.get('apiary_llm_tokens_total')}")
        time.sleep(0.2)
    assert value(found, "apiary_llm_tokens_total", **where, type="prompt") == 7


def test_apiaryctl_creates_a_metrics_reader_token(server: Apiaryd, tmp_path: Path) -> None:
    env = {
        "APIARY_SERVER": server.url,
        "APIARY_TOKEN": server.token,
        "APIARY_CONFIG": str(tmp_path / "config.yaml"),
        "APIARY_DATA_DIR": str(tmp_path),
    }
    r = CliRunner().invoke(apiaryctl, ["token", "create", "scraper", "--role", "metrics-reader"],
                           env=env)  # fmt: skip
    assert r.exit_code == 0, r.output
    reader = r.stdout.strip()
    assert scrape(server, reader).status_code == 200
    who = httpx.get(f"{server.url}/api/v1/whoami", headers={"Authorization": f"Bearer {reader}"})
    assert who.json() == {"user": "token:scraper", "role": "metrics-reader"}
