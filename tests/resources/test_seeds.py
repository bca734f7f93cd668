"""The nine seed manifests admit cleanly and every value in them survives unchanged."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from apiary.resources import admit, parse

from .helpers import SEEDS, seed

SEED_FILES = sorted(p.name for p in SEEDS.glob("*.yaml"))


def assert_subset(expected: Any, actual: Any, path: str = "") -> None:
    """Every value in ``expected`` is in ``actual`` with the same type (100 must not turn
    into 100.0) and the same value; lists match element by element."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not a mapping"
        for key, value in expected.items():
            assert key in actual, f"{path}.{key} was dropped"
            assert_subset(value, actual[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            assert_subset(want, got, f"{path}[{index}]")
    else:
        assert type(actual) is type(expected) and actual == expected, (
            f"{path}: {expected!r} became {actual!r}"
        )


def test_all_nine_seeds_are_present() -> None:
    assert len(SEED_FILES) == 9


@pytest.mark.parametrize("name", SEED_FILES)
def test_seed_admits_without_warnings_and_round_trips(name: str) -> None:
    manifest = seed(name[:2])
    original = copy.deepcopy(manifest)
    admission = admit(manifest)
    assert admission.warnings == []
    assert_subset(original, admission.object)
    assert manifest == original, "admit must not mutate its input"


@pytest.mark.parametrize("name", SEED_FILES)
def test_seed_passes_strict_and_admission_is_idempotent(name: str) -> None:
    first = admit(seed(name[:2]), strict=True).object
    again = admit(copy.deepcopy(first), strict=True)
    assert again.warnings == []
    assert again.object == first


@pytest.mark.parametrize("name", SEED_FILES)
def test_seed_parses_into_its_typed_model(name: str) -> None:
    model = parse(admit(seed(name[:2])).object)
    assert type(model).__name__ == seed(name[:2])["kind"]


def test_defaults_are_filled_in() -> None:
    simple = admit(seed("03")).object["spec"]
    assert simple["interface"] == {"type": "stdin", "format": "waggle", "concurrency": 1}
    swarm = admit(seed("07")).object["spec"]
    assert swarm["warmPoolSize"] == 0
    assert swarm["session"]["persistOnTerminate"] is False
    pipeline = admit(seed("05")).object["spec"]
    assert pipeline["routing"]["retryPolicy"]["backoffMultiplier"] == 2


def test_composed_hive_gets_its_pattern_and_member_names() -> None:
    spec = admit(seed("09")).object["spec"]
    assert spec["pattern"] == "composed"
    segments = spec["patternSegments"]
    assert segments[0]["config"]["subscribers"][0]["name"] == "subscriber1"
    assert segments[2]["config"]["agents"][0]["name"] == "agent1"
    assert segments[1]["config"]["stages"][1]["name"] == "stage2"


def test_secret_ref_and_output_schema_survive() -> None:
    spec = admit(seed("04")).object["spec"]
    ref = spec["runtime"]["env"][0]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "api-key-secret", "key": "openai-api-key"}
    assert spec["guardrails"]["outputSchema"]["properties"]["confidence"]["maximum"] == 1
