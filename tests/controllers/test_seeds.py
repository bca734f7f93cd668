"""The nine seed manifests, applied as-is: every Hive gets its drones and the Cell's maxCPU
(1000 millicores) holds the rest with a reason that names it. And the copies the project ships:
examples/seed-manifests/ is the originals byte for byte (compared with ../shared/seed-manifests
where that exists, else with the checked-in SHA256SUMS), and examples/seeds/ — the runnable set,
in Cell ``seeds`` — differs from them only where its comments say."""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import yaml

from apiary.controllers import Queen
from apiary.controllers.meta import get_condition
from apiary.store import Store

from .helpers import FakeClock, FakeNode, settle

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "examples" / "seed-manifests"
ORIGINALS = REPO.parent / "shared" / "seed-manifests"
RUNNABLE = REPO / "examples" / "seeds"
MANIFESTS = [yaml.safe_load(p.read_text()) for p in sorted(SEEDS.glob("*.yaml"))]
NINE = [
    "01-cell.yaml",
    "02-secret.yaml",
    "03-agentspec-simple.yaml",
    "04-agentspec-with-secret.yaml",
    "05-hive-pipeline.yaml",
    "06-hive-hierarchical.yaml",
    "07-hive-swarm.yaml",
    "08-hive-event-driven.yaml",
    "09-hive-composed.yaml",
]


def test_the_shipped_seed_manifests_are_the_originals() -> None:
    assert sorted(p.name for p in SEEDS.glob("*.yaml")) == NINE
    sums = dict(reversed(line.split()) for line in (SEEDS / "SHA256SUMS").read_text().splitlines())
    assert sorted(sums) == NINE
    for name in NINE:
        assert hashlib.sha256((SEEDS / name).read_bytes()).hexdigest() == sums[name], name
    if ORIGINALS.is_dir():  # CI: the clone sits next to /work/shared
        assert sorted(p.name for p in ORIGINALS.glob("*.yaml")) == NINE
        for name in NINE:
            assert (SEEDS / name).read_bytes() == (ORIGINALS / name).read_bytes(), name


def _without(doc: dict[str, Any], *paths: str) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for path in paths:
        *parents, last = path.split(".")
        node = doc
        for key in parents:
            node = node.get(key) or {}
        node.pop(last, None)
    return doc


def test_the_runnable_set_differs_from_the_originals_only_where_it_says() -> None:
    assert sorted(p.name for p in RUNNABLE.glob("*.yaml")) == NINE
    for name in NINE:
        original = yaml.safe_load((SEEDS / name).read_text())
        runnable = yaml.safe_load((RUNNABLE / name).read_text())
        if runnable["kind"] == "Cell":
            assert runnable["metadata"]["name"] == "seeds"
            assert runnable["spec"] == original["spec"]
            continue
        assert runnable["metadata"].pop("namespace") == "seeds"
        original["metadata"].pop("namespace")
        if runnable["kind"] != "AgentSpec":
            assert runnable == original, name
            continue
        changed = (
            "spec.runtime.command",
            "spec.runtime.workingDir",
            "spec.interface.format",
            "spec.resources.requests",
        )
        assert _without(runnable, *changed) == _without(original, *changed), name
    # what seed 04 exercises stays exercised
    llm = yaml.safe_load((RUNNABLE / "04-agentspec-with-secret.yaml").read_text())["spec"]
    assert llm["runtime"]["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "api-key-secret",
        "key": "openai-api-key",
    }
    for name in ("03-agentspec-simple.yaml", "04-agentspec-with-secret.yaml"):
        spec = yaml.safe_load((RUNNABLE / name).read_text())["spec"]
        assert spec["scaling"] == yaml.safe_load((SEEDS / name).read_text())["spec"]["scaling"]
    assert llm["guardrails"]["tokenBudgetPerSession"] == 500000


async def test_seed_manifests(store: Store, queen: Queen, clock: FakeClock) -> None:
    node = await FakeNode(store, clock, "n1", cpu=64_000, memory=256_000_000_000).register()
    for manifest in MANIFESTS:
        await store.create(manifest)
    await settle(queen, [node])
    drones = (await store.list("Drone", "default")).items
    placed = [d for d in drones if d["spec"].get("nodeName")]
    held = [d for d in drones if not d["spec"].get("nodeName")]
    cpu = sum(d["spec"]["resources"]["requests"]["cpu"] for d in placed)
    assert 0 < cpu <= 1000
    assert held and all(d["status"]["reason"] == "QuotaExceeded" for d in held)
    assert all("maxCPU=1000" in d["status"]["message"] for d in held)
    # seed 04: llm-agent runs minReplicas 2 standalone drones (they will fail on a real node)
    standalone = [d for d in drones if "apiary.io/hive" not in d["metadata"]["labels"]]
    assert {d["spec"]["agentSpec"] for d in standalone} == {"echo-agent", "llm-agent"}
    assert len(standalone) == 3
    for name in (
        "pipeline-hive",
        "hierarchical-hive",
        "swarm-hive",
        "event-driven-hive",
        "composed-hive",
    ):
        hv = await store.get("Hive", "default", name)
        assert get_condition(hv, "ResolvedRefs")["status"] == "True"
        assert hv["status"]["replicas"] > 0
