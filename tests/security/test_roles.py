"""apiary.security's rules table on its own: what each role may do, how denials read, what a node
sees of other nodes' drones, and which token bindings are refused. (Token format and the
authenticator: test_tokens.py.)"""

from __future__ import annotations

import pytest

from apiary.security import Principal, allowed, binding_problems, denial
from apiary.security.roles import placed_elsewhere, placement_only

DEV = Principal("token:d", (), "developer", "a")
NODE = Principal("system:node:n1", (), "node", None, "n1")


@pytest.mark.parametrize(
    ("principal", "verb", "kind", "cell", "name", "ok"),
    [
        (DEV, "create", "Hive", "a", None, True),
        (DEV, "create", "Hive", "b", None, False),
        (DEV, "delete", "Drone", "a", None, False),
        (DEV, "reveal", "Secret", "a", None, False),
        (DEV, "list", "Hive", None, None, False),  # across all cells
        (DEV, "get", "Cell", None, "a", False),
        (NODE, "update/status", "Node", None, "n1", True),
        (NODE, "update/status", "Node", None, "n2", False),
        (NODE, "create", "Hive", "a", None, False),
        (NODE, "list", "Drone", None, None, True),
        (NODE, "reveal", "Secret", "a", None, True),
        (NODE, "get", "Session", "a", None, False),
        (NODE, "get/dispatches", "Session", "a", None, True),
        (Principal("x"), "get", "Hive", "a", None, False),  # no role: nothing
        (Principal("root", ("system:masters",)), "delete", "Cell", None, "a", True),
    ],
)
def test_the_rules_table(
    principal: Principal, verb: str, kind: str, cell: str | None, name: str | None, ok: bool
) -> None:
    assert allowed(principal, verb, kind, cell, name) is ok


def test_denials_name_who_verb_kind_and_cell() -> None:
    assert denial(DEV, "delete", "Cell", None, "b") == (
        'user "token:d" (developer in cell "a") may not delete Cell "b"'
    )
    assert denial(NODE, "create", "Hive", "a") == (
        'user "system:node:n1" (node "n1") may not create Hive in cell "a"'
    )


def test_a_node_sees_only_the_placement_of_other_nodes_drones() -> None:
    drone = {"apiVersion": "apiary.io/v1", "kind": "Drone",
             "metadata": {"name": "d", "namespace": "a", "uid": "u", "labels": {"x": "y"}},
             "spec": {"nodeName": "n2", "runtime": {"command": ["secret-cmd"]}},
             "status": {"pid": 1}}  # fmt: skip
    assert placed_elsewhere(NODE, "Drone", drone) == "n2"
    assert placement_only(drone) == {
        "apiVersion": "apiary.io/v1", "kind": "Drone",
        "metadata": {"name": "d", "namespace": "a", "uid": "u"}, "spec": {"nodeName": "n2"},
    }  # fmt: skip
    drone["spec"]["nodeName"] = "n1"
    assert placed_elsewhere(NODE, "Drone", drone) is None
    assert placed_elsewhere(DEV, "Drone", {"spec": {}}) is None


def test_binding_problems() -> None:
    assert binding_problems("developer", "a", None) == []
    assert binding_problems("node", None, "n1") == []
    assert binding_problems("cluster-admin", None, None) == []
    assert [f for f, _ in binding_problems("viewer", None, None)] == ["spec.cell"]
    assert [f for f, _ in binding_problems("node", "a", None)] == ["spec.cell", "spec.node"]
