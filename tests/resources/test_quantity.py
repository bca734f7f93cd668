"""cpu and memory: ints as millicores/bytes, Kubernetes quantity strings, normalized to ints."""

from __future__ import annotations

from typing import Any

import pytest

from apiary.resources import admit, to_bytes, to_millicores

from .helpers import agentspec, errors_of


@pytest.mark.parametrize(
    ("value", "millicores"),
    [
        (100, 100),
        (0, 0),
        (2000.0, 2000),
        ("500m", 500),
        ("0.5", 500),
        ("1", 1000),
        ("2", 2000),
        ("1.5", 1500),
        (".1", 100),
        ("0.0001", 1),
        ("1k", 1_000_000),
        ("250000u", 250),
        ("1e-3", 1),
        (" 3 ", 3000),
    ],
)
def test_cpu(value: Any, millicores: int) -> None:
    assert to_millicores(value) == millicores


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (128000000, 128000000),
        ("128Mi", 128 * 2**20),
        ("1G", 10**9),
        ("1Gi", 2**30),
        ("1e3", 1000),
        ("129M", 129_000_000),
        ("123Ki", 123 * 1024),
        ("0.5Ki", 512),
        ("1500m", 2),
        ("1Ei", 2**60),
    ],
)
def test_memory(value: Any, size: int) -> None:
    assert to_bytes(value) == size


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("lots", "not a quantity"),
        ("-1", "negative"),
        (-5, "negative"),
        (True, "boolean"),
        (0.5, "quantity string"),
        ([1], "quantity string"),
        ("1K", "not a quantity"),
        ("1e999", "out of range"),
        ("", "not a quantity"),
        (float("nan"), "quantity string"),
    ],
)
def test_bad_quantities(value: Any, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        to_millicores(value)


def test_huge_quantities_are_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        to_bytes("100Ei")


def test_quantities_are_normalized_in_objects() -> None:
    body = agentspec(
        resources={
            "requests": {"cpu": "250m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "1Gi"},
        }
    )
    resources = admit(body).object["spec"]["resources"]
    assert resources == {
        "requests": {"cpu": 250, "memory": 64 * 2**20},
        "limits": {"cpu": 1000, "memory": 2**30},
    }


def test_request_defaults_to_limit_like_kubernetes() -> None:
    body = agentspec(resources={"limits": {"cpu": 500, "memory": "256Mi"}})
    resources = admit(body).object["spec"]["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": 500, "memory": 256 * 2**20}


def test_quantity_errors_name_the_field() -> None:
    errors = errors_of(agentspec(resources={"requests": {"cpu": "fast", "memory": -1}}))
    assert "not a quantity" in errors["spec.resources.requests.cpu"]
    assert "negative" in errors["spec.resources.requests.memory"]
