"""AgentSpec ``spec.memory``: how far its drones reach their cell's long-term memory
(docs/comb.md, "What a drone may reach")."""

from __future__ import annotations

from apiary.controllers.templates import drone_template
from apiary.resources import admit

from .helpers import agentspec, errors_of


def test_memory_is_none_read_or_readwrite_and_unset_by_default() -> None:
    assert "memory" not in admit(agentspec()).object["spec"]
    for mode in ("none", "read", "readwrite"):
        admitted = admit(agentspec(memory=mode))
        assert admitted.object["spec"]["memory"] == mode and admitted.warnings == []
    errors = errors_of(agentspec(memory="write"))
    assert set(errors) == {"spec.memory"}


def test_the_drone_template_carries_memory_to_the_node() -> None:
    body = admit(agentspec(memory="read")).object
    body["metadata"].setdefault("name", "a")
    assert drone_template(body, cell=None)["memory"] == "read"
    assert "memory" not in drone_template(admit(agentspec()).object, cell=None)
