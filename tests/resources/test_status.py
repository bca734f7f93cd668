"""validate_status: what controllers write through /status is typed, extra fields are kept."""

from __future__ import annotations

import pytest

from apiary.resources import ValidationFailed, validate_status


def test_drone_status_as_the_node_agent_writes_it() -> None:
    status = {
        "phase": "Failed",
        "restartCount": 3,
        "pid": 42,
        "exitCode": 1,
        "signal": "SIGKILL",
        "reason": "CrashLoopBackOff",
        "message": "back-off 4s",
        "lastStderr": ["boom"],
        "nextRestartAt": 1700000000.5,
        "startedAt": 1700000000,
        "ready": False,
        "nodeName": "node-1",
        "somethingNew": {"kept": True},
    }
    assert validate_status("Drone", status) == status
    assert validate_status("drone", {"lastStderr": "one line"}) == {"lastStderr": "one line"}


def test_status_errors_name_the_field() -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_status(
            "Drone",
            {
                "phase": "Zombie",
                "restartCount": "1",
                "lastStderr": [1],
                "conditions": [{"type": "Ready", "status": "Yes"}],
            },
        )
    errors = dict(caught.value.details)
    assert errors["status.phase"].startswith("must be one of 'Pending', 'Starting', 'Running'")
    assert errors["status.restartCount"] == "must be an integer"
    assert "list of strings" in errors["status.lastStderr"]
    assert errors["status.conditions[0].status"].startswith("must be one of 'True', 'False'")


def test_node_status_quantities_and_lease() -> None:
    out = validate_status(
        "Node",
        {
            "capacity": {"cpu": "2", "memory": "4Gi", "drones": 50},
            "lease": {"renewTime": "2024-01-01T00:00:00Z"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    )
    assert out["capacity"] == {"cpu": 2000, "memory": 4 * 2**30, "drones": 50}
    with pytest.raises(ValidationFailed) as caught:
        validate_status("Node", {"lease": {"renewTime": "soon"}})
    assert "status.lease.renewTime" in dict(caught.value.details)


def test_session_and_hive_status() -> None:
    out = validate_status(
        "Session",
        {
            "phase": "Running",
            "output": {"any": ["json"]},
            "usage": {"promptTokens": 5, "completionTokens": 7},
        },
    )
    assert out["usage"] == {"promptTokens": 5, "completionTokens": 7}
    assert (
        validate_status("Hive", {"observedGeneration": 2, "readyReplicas": 3})["readyReplicas"] == 3
    )


@pytest.mark.parametrize(
    ("kind", "status", "path"),
    [
        ("Secret", {}, "status"),
        ("Event", {}, "status"),
        ("Hive", [], "status"),
        ("Pod", {}, "kind"),
    ],
)
def test_status_refusals(kind: str, status: object, path: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        validate_status(kind, status)
    assert caught.value.details[0][0] == path
