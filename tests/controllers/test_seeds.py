"""The nine seed manifests, applied as-is: every Hive gets its drones and the Cell's maxCPU
(1000 millicores) holds the rest with a reason that names it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from apiary.controllers import Queen
from apiary.controllers.meta import get_condition
from apiary.store import Store

from .helpers import FakeClock, FakeNode, settle

SEEDS = Path("/work/shared/seed-manifests")
MANIFESTS = [yaml.safe_load(p.read_text()) for p in sorted(SEEDS.glob("*.yaml"))]


@pytest.mark.skipif(not MANIFESTS, reason=f"seed manifests not found at {SEEDS}")
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
