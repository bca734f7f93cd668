"""The hive fields the patterns added: spec.eventDriven.maxHops and segment config.maxHops."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from apiary.resources import ValidationFailed, admit

from .helpers import seed


def body(pattern: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apiary.io/v1",
        "kind": "Hive",
        "metadata": {"name": "h", "namespace": "default"},
        "spec": {"pattern": pattern, "stages": [{"name": "a", "agentRef": "e"}], **spec},
    }


def errors(obj: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailed) as caught:
        admit(obj, strict=True)
    return dict(caught.value.details)


def test_event_driven_max_hops_is_accepted_without_warnings() -> None:
    admission = admit(body("event-driven", eventDriven={"maxHops": 3}), strict=True)
    assert admission.object["spec"]["eventDriven"] == {"maxHops": 3}
    assert admission.warnings == []


def test_event_driven_settings_are_checked() -> None:
    assert "spec.eventDriven" in errors(body("pipeline", eventDriven={"maxHops": 3}))
    assert "spec.eventDriven.maxHops" in errors(body("event-driven", eventDriven={"maxHops": 0}))
    assert "spec.eventDriven.maxHops" in errors(body("event-driven", eventDriven={"maxHops": "2"}))


def test_segment_max_hops_only_for_event_driven_segments() -> None:
    hive = seed("09")
    hive["spec"]["patternSegments"][0]["config"]["maxHops"] = 2
    assert admit(copy.deepcopy(hive), strict=True).warnings == []
    hive["spec"]["patternSegments"][1]["config"]["maxHops"] = 2
    problems = errors(hive)
    assert problems == {
        "spec.patternSegments[1].config.maxHops": "only used with pattern event-driven"
    }
