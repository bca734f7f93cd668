"""Warm pools on a real apiaryd with its embedded node and real agent processes (issue 14.1).

* Seed 05 (``poolMode: warm``, ``warmPoolSize: 2``) with the runnable agents of examples/seeds/
  keeps two warm drones per stage beside the serving ones; sessions through the pipeline never
  reach them; ``apiaryctl get drones`` shows them ``Warm``. A serving drone killed with SIGKILL is
  replaced by one of its stage's warm drones: the drone that answers next is that warm drone,
  with the pid it had before the kill (its process started before the crash: nothing started on
  the message path), and the pool refills.
* ``hybrid`` releases its pool after ``pool.idleSeconds`` (1.5 s here) without traffic and brings
  it back once the stage answers again; ``cold`` keeps none; the Cell's ``status.used`` counts
  pool drones; a stage at 0 replicas (autoscaled, ``minReplicas: 0``) answers its first message
  from its warm drone.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from apiary.client import ApiClient

from .cluster import ECHO, REPO, Apiaryd, drones, new_cell, retire, run_session, wait_for

pytestmark = pytest.mark.slow
Obj = dict[str, Any]
SEEDS = REPO / "examples" / "seeds"
POOL = "apiary.io/warm-pool"
STAGE = "apiary.io/stage"


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    # drones report status.usage (what hybrid pools read as traffic) every 0.2 s, not every 5 s
    monkeypatch.setenv("APIARY_NODE_USAGE_SECONDS", "0.2")
    s = Apiaryd(tmp_path / "data").start()
    yield s
    retire(s)


def seed(name: str, cell: str) -> Obj:
    """A manifest of examples/seeds/ moved into ``cell`` (01's Cell is renamed to it)."""
    doc: Obj = yaml.safe_load((SEEDS / name).read_text())
    if doc["kind"] == "Cell":
        doc["metadata"]["name"] = cell
    else:
        doc["metadata"]["namespace"] = cell
    return doc


def warm(d: Obj) -> bool:
    return (d.get("spec") or {}).get("warm") is True


def ready(d: Obj) -> bool:
    st = d.get("status") or {}
    return st.get("ready") is True and st.get("phase") == "Running"


def by_stage(items: list[Obj], label: str = STAGE) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for d in items:
        stage = (d["metadata"].get("labels") or {}).get(label)
        if stage:
            out.setdefault(stage, []).append(d)
    return out


def wait_for_drones(c: ApiClient, cell: str, check: Any, timeout: float, what: str) -> list[Obj]:
    last: list[Obj] = []

    def probe() -> list[Obj] | None:
        nonlocal last
        last = drones(c, cell)
        return last if check(last) else None

    try:
        return list(wait_for(probe, timeout, what))
    except BaseException:
        print([(d["metadata"]["name"], (d.get("status") or {}).get("phase"),
                (d.get("status") or {}).get("reason"), warm(d)) for d in last])  # fmt: skip
        raise


def settled(serving: dict[str, int], pool: dict[str, int]) -> Any:
    """Every stage runs its serving drones and its pool, all Ready."""

    def check(items: list[Obj]) -> bool:
        if not all(ready(d) for d in items):
            return False
        live = {s: len(ds) for s, ds in by_stage([d for d in items if not warm(d)]).items()}
        kept = {s: len(ds) for s, ds in by_stage([d for d in items if warm(d)], POOL).items()}
        return live == serving and kept == pool

    return check


def answered_by(c: ApiClient, cell: str, session_hive: str, payload: str) -> set[str]:
    """Run one session; the drones its transcript says answered."""
    run_session(c, cell, session_hive, payload)
    listed = c.list("Session", cell)["items"]
    names = set()
    for s in listed:
        base = f"/api/v1/cells/{cell}/sessions/{s['metadata']['name']}/transcript"
        names |= {e["drone"] for e in c.request("GET", base).body["items"] if e.get("drone")}
    return names


def test_seed_05_keeps_warm_drones_that_get_no_traffic_and_replace_a_crash(
    server: Apiaryd,
) -> None:
    cell = new_cell()
    c = server.client(cell)
    for name in ("01-cell.yaml", "02-secret.yaml", "03-agentspec-simple.yaml",
                 "04-agentspec-with-secret.yaml", "05-hive-pipeline.yaml"):  # fmt: skip
        c.apply(seed(name, cell))
    serving = {"stage1": 2, "stage2": 3, "stage3": 1}
    pools = {"stage1": 2, "stage2": 2, "stage3": 2}
    items = wait_for_drones(c, cell, settled(serving, pools), 40, "seed 05 with its warm pools")
    pooled = {d["metadata"]["name"]: d for d in items if warm(d)}
    assert all(d["metadata"]["name"].rsplit("-", 1)[1].startswith("w") for d in pooled.values())

    shown = subprocess.run(
        [sys.executable, "-m", "apiary.ctl.main", "get", "drones", "-s", server.url,
         "--token", server.token, "-n", cell],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    warm_rows = [ln for ln in shown.stdout.splitlines() if ln.split()[1:2] == ["Warm"]]
    assert sorted(ln.split()[0] for ln in warm_rows) == sorted(pooled)

    for i in range(4):
        out = run_session(c, cell, "pipeline-hive", f"hi {i}")
        assert "LLM(Echo: hi" in str(out), out
    seen = answered_by(c, cell, "pipeline-hive", "once more")
    # no drone answered while warm (echo-agent's autoscaler may have claimed some meanwhile)
    still = {d["metadata"]["name"] for d in drones(c, cell) if warm(d)}
    assert seen and still and not seen & still, (seen, still, pooled.keys())

    def pool_status() -> bool:  # the Hive says so too (refilled if the autoscaler claimed one)
        hive = c.get("Hive", "pipeline-hive", cell)
        return {s["name"]: s["pool"]["ready"] for s in hive["status"]["stages"]} == pools

    wait_for(pool_status, 15, "status.stages[].pool of every stage 2 ready")

    # a crash of a serving drone of stage2 (llm-agent: 3 replicas, no autoscaling): one of
    # stage2's warm drones takes its place
    items = drones(c, cell)
    victim = next(d for d in items if not warm(d) and by_stage([d]).get("stage2"))
    stage2_pool = {d["metadata"]["name"]: d for d in by_stage(items, POOL)["stage2"]}
    pids = {n: d["status"]["pid"] for n, d in stage2_pool.items()}
    killed_at = time.time()
    os.kill(victim["status"]["pid"], signal.SIGKILL)

    def replaced(items: list[Obj]) -> bool:
        live = [d for d in by_stage(items).get("stage2", []) if not warm(d)]
        return (
            len(live) == 3
            and victim["metadata"]["uid"] not in {d["metadata"]["uid"] for d in items}
            and any(d["metadata"]["name"] in stage2_pool and ready(d) for d in live)
        )

    items = wait_for_drones(c, cell, replaced, 20, "a warm drone in the crashed one's place")
    (successor,) = [d for d in by_stage(items)["stage2"] if d["metadata"]["name"] in stage2_pool]
    name = successor["metadata"]["name"]
    assert successor["spec"]["ordinal"] == victim["spec"]["ordinal"]
    assert successor["status"]["pid"] == pids[name]  # the warm drone's own process
    assert successor["status"].get("restartCount", 0) == 0
    assert psutil.Process(pids[name]).create_time() < killed_at  # started before the crash

    for i in range(12):  # three serving drones share stage2's queue: the successor answers too
        out = run_session(c, cell, "pipeline-hive", f"after the crash {i}")
        assert f"LLM(Echo: after the crash {i})" in str(out), out
        if name in answered_by(c, cell, "pipeline-hive", f"and again {i}"):
            break
    else:
        pytest.fail(f"{name} never answered")
    assert c.get("Drone", name, cell)["status"]["pid"] == pids[name]  # from its old pid
    wait_for_drones(
        c, cell, lambda ds: len([d for d in by_stage(ds, POOL).get("stage2", []) if ready(d)]) == 2,
        20, "stage2's pool refilled",
    )  # fmt: skip
    events = c.list("Event", cell)["items"]
    assert any(e["reason"] == "ReplacedFromPool" and name in e["message"] for e in events)


def test_hybrid_releases_after_idle_cold_keeps_none_and_zero_scales_from_the_pool(
    server: Apiaryd,
) -> None:
    cell = new_cell()
    c = server.client(cell)
    c.apply({"apiVersion": "apiary.io/v1", "kind": "Cell", "metadata": {"name": cell}})

    def agent(name: str, **spec: Any) -> Obj:
        return {"apiVersion": "apiary.io/v1", "kind": "AgentSpec",
                "metadata": {"name": name, "namespace": cell},
                "spec": {"runtime": {"command": ECHO},
                         "interface": {"type": "stdin", "format": "text"},
                         "resources": {"requests": {"cpu": 10, "memory": 8_000_000}},
                         **spec}}  # fmt: skip

    def hive(name: str, agent_ref: str, replicas: int, **spec: Any) -> Obj:
        return {"apiVersion": "apiary.io/v1", "kind": "Hive",
                "metadata": {"name": name, "namespace": cell},
                "spec": {"pattern": "pipeline", **spec,
                         "stages": [{"name": "work", "agentRef": agent_ref,
                                     "replicas": replicas}]}}  # fmt: skip

    c.apply(agent("echo"))
    c.apply(agent("lazy", scaling={"minReplicas": 0, "maxReplicas": 2, "cooldownSeconds": 60}))
    c.apply(hive("hot", "echo", 1, poolMode="hybrid", warmPoolSize=1,
                 pool={"idleSeconds": 1.5}))  # fmt: skip
    c.apply(hive("plain", "echo", 1))  # cold, the default
    c.apply(hive("zero", "lazy", 0, poolMode="warm", warmPoolSize=1))

    def of(items: list[Obj], hive_name: str) -> list[Obj]:
        return [d for d in items if d["metadata"]["labels"].get("apiary.io/hive") == hive_name]

    # zero's only drone is its warm one; plain has no pool at all
    items = wait_for_drones(
        c, cell,
        lambda ds: len(of(ds, "zero")) == 1 and all(map(ready, of(ds, "zero")))
        and len(of(ds, "plain")) == 1 and all(map(ready, of(ds, "plain"))),
        20, "zero's warm drone and plain's drone",
    )  # fmt: skip
    (w,) = of(items, "zero")
    assert warm(w) and not any(warm(d) for d in of(items, "plain"))
    warm_pid = w["status"]["pid"]

    # hybrid: a pool while new, gone after 1.5 s without traffic; quota usage follows it
    def used() -> int:
        return int(((c.get("Cell", cell).get("status") or {}).get("used") or {}).get(
            "maxTotalDrones", -1))  # fmt: skip

    wait_for_drones(c, cell, lambda ds: not any(warm(d) for d in of(ds, "hot"))
                    and len(of(ds, "hot")) == 1, 15, "hot's pool released")  # fmt: skip
    wait_for(lambda: used() == 3, 10, "status.used without hot's pool (3 drones)")
    events = c.list("Event", cell)["items"]
    assert any(e["reason"] == "WarmPoolReleased" for e in events)
    out = run_session(c, cell, "hot", "wake up")
    assert out == "Echo: wake up"
    wait_for_drones(c, cell, lambda ds: sum(map(warm, of(ds, "hot"))) == 1
                    and all(map(ready, of(ds, "hot"))), 15, "hot's pool back")  # fmt: skip
    wait_for(lambda: used() == 4, 10, "status.used counting hot's warm drone (4 drones)")

    # scale from zero: the autoscaler asks for one drone, the warm one is claimed and answers
    assert run_session(c, cell, "zero", "first") == "Echo: first"
    entries = []
    for s in c.list("Session", cell)["items"]:
        if s["spec"]["hiveRef"] == "zero":
            path = f"/api/v1/cells/{cell}/sessions/{s['metadata']['name']}/transcript"
            entries += [e for e in c.request("GET", path).body["items"] if e.get("drone")]
    assert {e["drone"] for e in entries} == {w["metadata"]["name"]}
    claimed = c.get("Drone", w["metadata"]["name"], cell)
    assert not warm(claimed) and claimed["status"]["pid"] == warm_pid
    assert claimed["metadata"]["labels"][STAGE] == "work"
