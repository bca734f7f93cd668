"""Every pattern end to end on a real apiaryd with real agents: the seed hives 05-09 as the runnable
set examples/seeds/ has them (Cell seeds, runnable agents) plus a majority swarm and filtered
events."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from apiary.client import ApiClient

from .cluster import REPO, Apiaryd, is_ready, run_session

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
CELL = "seeds"


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiClient]:
    server = Apiaryd(tmp_path_factory.mktemp("patterns") / "data").start()
    try:
        c = server.client(CELL)
        runnable = sorted((REPO / "examples/seeds").glob("*.yaml"))
        docs = [d for f in runnable for d in yaml.safe_load_all(f.read_text())]
        for doc in yaml.safe_load_all((REPO / "tests/e2e/pattern_hives.yaml").read_text()):
            doc["metadata"]["namespace"] = CELL
            docs.append(doc)
        for doc in docs:
            c.apply(doc)
        deadline = time.monotonic() + 60
        while True:
            hives = c.list("Hive", CELL)["items"]
            drones = c.list("Drone", CELL)["items"]
            mine = [d for d in drones if d["spec"].get("hive")]
            if (
                hives
                and all(
                    (h.get("status") or {}).get("readyReplicas")
                    == (h.get("status") or {}).get("replicas")
                    for h in hives
                )
                and mine
                and all(map(is_ready, mine))
            ):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"hives never became ready: {[h.get('status') for h in hives]}")
            time.sleep(0.2)
        yield c
    finally:
        server.stop()


def run(c: ApiClient, hive: str, payload: Any, type: str = "task", timeout: float = 30) -> Any:
    """One input to a new session of ``hive`` in the seeds' Cell; its final payload."""
    return run_session(c, CELL, hive, payload, type, timeout)


def test_pipeline_applies_the_stages_in_order(seeded: ApiClient) -> None:
    out = run(seeded, "pipeline-hive", "hello")
    # echo → llm → echo: the last stage echoes the LLM's JSON answer to "Echo: hello".
    assert isinstance(out, str) and out.startswith("Echo: ")
    assert json.loads(out[len("Echo: ") :]) == {"response": "LLM(Echo: hello)", "confidence": 0.9}


def test_hierarchical_supervisor_answers_from_its_workers(seeded: ApiClient) -> None:
    out = run(seeded, "hierarchical-hive", "plan a trip")
    assert out == {
        "response": "summary of 2 workers: worker1: Echo: plan a trip; worker2: Echo: plan a trip",
        "confidence": 0.9,
    }


def test_swarm_gathers_every_agent(seeded: ApiClient) -> None:
    out = run(seeded, "swarm-hive", "q")
    assert out == [
        {"stage": "agent1", "payload": "Echo: q"},
        {"stage": "agent2", "payload": {"response": "LLM(q)", "confidence": 0.9}},
        {"stage": "agent3", "payload": "Echo: q"},
    ]


def test_swarm_majority_outvotes_the_wrong_agent(seeded: ApiClient) -> None:
    assert run(seeded, "majority-swarm", "2+2") == "Echo: 2+2"


def test_event_driven_honours_filters(seeded: ApiClient) -> None:
    out = run(seeded, "filtered-events", "new order", type="event")
    # Only the stage whose filter takes plain events answered; its output (an event) matched no
    # other filter, so the flow ended there.
    assert out == [{"stage": "any-event", "type": "event", "payload": "Echo: new order"}]


def test_seed_event_driven_hive_runs_to_its_hop_limit(seeded: ApiClient) -> None:
    out = run(seeded, "event-driven-hive", "ping", type="event")
    assert isinstance(out, list) and out
    assert {o["stage"] for o in out} == {"subscriber1", "subscriber2"}


def test_composed_chains_its_segments(seeded: ApiClient) -> None:
    out = run(seeded, "composed-hive", "go")
    assert isinstance(out, list) and len(out) == 1
    (only,) = out
    assert only["stage"] == "swarm-stage-agent1"
    # event segment → echo; pipeline segment → llm then echo; swarm segment → echo.
    assert only["payload"].startswith("Echo: Echo: ")
    assert "LLM(" in only["payload"]
