"""Task tiers in the controllers: the drone template carries what ``taskTier`` resolves to in its
Cell, and under node shortage the scheduler places the higher tiers' drones first."""

from __future__ import annotations

from typing import Any

from apiary.controllers import Queen
from apiary.controllers.templates import drone_template
from apiary.store import Store

from .helpers import FakeClock, FakeNode, agentspec, cell, drones_of, settle

TIERS = {
    "simple": {"model": "fake-small", "maxTokens": 64},
    "standard": {"model": "fake-large", "maxTokens": 512},
}


def tiered_cell(tiers: dict[str, Any]) -> dict[str, Any]:
    body = cell()
    body["spec"]["tiers"] = tiers
    return body


def placed(drones: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for d in drones:
        if d["spec"].get("nodeName"):
            agent = d["spec"]["agentSpec"]
            counts[agent] = counts.get(agent, 0) + 1
    return counts


def test_the_template_resolves_the_tier_cell_over_server_over_builtin() -> None:
    spec = agentspec("a", taskTier="simple")
    server = {"simple": {"model": "server-mini", "maxTokens": 100}}
    plain = drone_template(spec, cell=None)
    assert plain["resolvedTier"] == {"name": "simple", "priority": "low"}
    assert drone_template(spec, cell=None, tiers=server)["resolvedTier"] == {
        "name": "simple", "priority": "low", "model": "server-mini", "maxTokens": 100,
    }  # fmt: skip
    on_cell = drone_template(
        spec, cell=tiered_cell({"simple": {"model": "cell-mini"}}), tiers=server
    )
    assert on_cell["resolvedTier"] == {
        "name": "simple", "priority": "low", "model": "cell-mini", "maxTokens": 100,
    }  # fmt: skip
    assert "resolvedTier" not in drone_template(agentspec("b"), cell=tiered_cell(TIERS))


async def test_standard_drones_are_placed_first_when_the_node_is_short(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await store.create(tiered_cell(TIERS))
    # the simple tier's drones are older: without tiers they would be placed first
    await store.create(agentspec("cheap", cpu=100, taskTier="simple", replicas=2))
    clock.advance(1)
    await store.create(agentspec("main", cpu=100, taskTier="standard", replicas=2))
    await queen.sync_once()
    drones = await drones_of(store)
    assert len(drones) == 4 and placed(drones) == {}  # no node yet: all four pending
    by_agent = {d["spec"]["agentSpec"]: d["spec"]["resolvedTier"] for d in drones}
    assert by_agent == {
        "cheap": {"name": "simple", "priority": "low", "model": "fake-small", "maxTokens": 64},
        "main": {"name": "standard", "priority": "normal", "model": "fake-large",
                 "maxTokens": 512},
    }  # fmt: skip

    node = await FakeNode(store, clock, "n", cpu=250).register()  # room for two of the four
    await settle(queen, [node])
    drones = await drones_of(store)
    assert placed(drones) == {"main": 2}
    held = [d for d in drones if d["spec"]["agentSpec"] == "cheap"]
    assert {d["status"]["reason"] for d in held} == {"Unschedulable"}

    # room for the rest appears: the lower tier is placed too, nothing placed is moved
    more = await FakeNode(store, clock, "m", cpu=1000).register()
    await settle(queen, [node, more])
    assert placed(await drones_of(store)) == {"main": 2, "cheap": 2}


async def test_a_cell_may_raise_a_tiers_priority_and_a_tier_change_rolls_its_drones(
    store: Store, queen: Queen, clock: FakeClock
) -> None:
    await store.create(tiered_cell({"simple": {"priority": "high"}}))
    await store.create(agentspec("main", cpu=100, taskTier="standard", replicas=1))
    clock.advance(1)
    await store.create(agentspec("cheap", cpu=100, taskTier="simple", replicas=1))
    await queen.sync_once()
    node = await FakeNode(store, clock, "n", cpu=150).register()  # room for one
    await settle(queen, [node])
    assert placed(await drones_of(store)) == {"cheap": 1}

    (before,) = [d for d in await drones_of(store) if d["spec"]["agentSpec"] == "cheap"]

    def remodel(c: dict[str, Any]) -> dict[str, Any]:
        c["spec"]["tiers"] = {"simple": {"priority": "high", "model": "fake-small"}}
        return c

    await store.update_with_retry("Cell", "", "default", remodel)
    more = await FakeNode(store, clock, "m", cpu=1000).register()  # room for the surge
    await settle(queen, [node, more])
    (after,) = [d for d in await drones_of(store) if d["spec"]["agentSpec"] == "cheap"]
    assert after["spec"]["templateHash"] != before["spec"]["templateHash"]
    assert after["spec"]["resolvedTier"]["model"] == "fake-small"


async def test_the_queen_resolves_tiers_with_the_servers_map(
    store: Store, clock: FakeClock
) -> None:
    """apiaryd hands its Settings.tiers (APIARY_TIERS) to the Queen as QueenSettings.tiers: a
    Cell without tiers gets the server's models; the Cell's own fields still win."""
    from apiary.controllers import QueenSettings

    queen = Queen(store, QueenSettings(clock=clock, tiers=TIERS))
    await store.create(tiered_cell({"standard": {"maxTokens": 100}}))
    await store.create(agentspec("cheap", cpu=10, taskTier="simple", replicas=1))
    await store.create(agentspec("main", cpu=10, taskTier="standard", replicas=1))
    await queen.sync_once()
    resolved = {d["spec"]["agentSpec"]: d["spec"]["resolvedTier"] for d in await drones_of(store)}
    assert resolved["cheap"]["model"] == "fake-small" and resolved["cheap"]["maxTokens"] == 64
    assert resolved["main"]["model"] == "fake-large" and resolved["main"]["maxTokens"] == 100
