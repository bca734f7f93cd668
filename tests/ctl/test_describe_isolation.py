"""`apiaryctl describe drone` says how the drone is confined (status.isolation), on one line."""

from __future__ import annotations

from datetime import UTC, datetime

from apiary.ctl.commands.describe import summary


def test_a_drone_shows_its_user_and_what_enforces_its_limits() -> None:
    drone = {
        "kind": "Drone",
        "metadata": {"name": "d", "namespace": "c"},
        "status": {
            "phase": "Running",
            "isolation": {"home": "/h", "memory": "rlimit", "user": "65534:65534",
                          "cpu": "not enforced (no writable cgroup v2)", "workingDir": "/w"},
        },
    }  # fmt: skip
    lines = summary(drone, datetime.now(UTC))
    assert (
        "Isolation:    user 65534:65534, memory rlimit, cpu not enforced (no writable cgroup v2), "
        "workingDir /w, home /h"
    ) in lines
    other = {"kind": "Hive", "metadata": {"name": "h"}, "status": {"isolation": {"user": "x"}}}
    assert not any(line.startswith("Isolation:") for line in summary(other, datetime.now(UTC)))
