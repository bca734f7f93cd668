"""Property: whatever JSON arrives, admit either succeeds or raises ValidationFailed — never
another exception — and what it accepts it accepts again unchanged."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apiary.resources import MODELS, ValidationFailed, admit, validate_status

from .helpers import SEEDS, seed

SEED_NAMES = sorted(p.name[:2] for p in SEEDS.glob("*.yaml"))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["500m", "128Mi", "a", "pipeline", "stdin", "http", "", "-", "x/y", "Zm9v"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.one_of(st.text(max_size=8), st.sampled_from(["name", "agentRef", "spec", "stages"])),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)

FAST = settings(
    max_examples=250,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _check(body: Any, strict: bool) -> None:
    try:
        admission = admit(body, strict=strict)
    except ValidationFailed as failed:
        assert failed.details, "a failure must say what failed"
        for path, message in failed.details:
            assert isinstance(path, str) and isinstance(message, str) and message
        return
    json.dumps(admission.object, allow_nan=True)  # plain data only
    again = admit(copy.deepcopy(admission.object), strict=strict)
    assert again.object == admission.object


@FAST
@given(json_values, st.booleans())
def test_arbitrary_json(body: Any, strict: bool) -> None:
    _check(body, strict)


@FAST
@given(
    st.sampled_from(sorted(MODELS)),
    json_values,
    json_values,
    st.one_of(st.just({"name": "x"}), json_values),
    st.booleans(),
)
def test_arbitrary_bodies_of_every_kind(
    kind: str, spec: Any, extra: Any, metadata: Any, strict: bool
) -> None:
    body = {"apiVersion": "apiary.io/v1", "kind": kind, "metadata": metadata, "spec": spec}
    if isinstance(extra, dict):
        body.update({k: v for k, v in extra.items() if k not in ("apiVersion", "kind")})
    _check(body, strict)


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*at, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*at, index)))
    return found


@FAST
@given(st.sampled_from(SEED_NAMES), st.data(), json_values, st.booleans())
def test_mutated_seeds(name: str, data: st.DataObject, replacement: Any, strict: bool) -> None:
    body = seed(name)
    paths = [p for p in _paths(body) if p]
    path = data.draw(st.sampled_from(paths))
    target = body
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = replacement
    _check(body, strict)


@FAST
@given(st.sampled_from([*MODELS, "drone", "Pod"]), json_values)
def test_arbitrary_status(kind: str, status: Any) -> None:
    try:
        out = validate_status(kind, status)
    except ValidationFailed:
        return
    assert validate_status(kind, out) == out


def test_an_integer_json_cannot_carry_is_a_problem_not_a_type_error() -> None:
    """Hypothesis found it: orjson cannot encode an integer beyond 64 bits, and the size check
    raised TypeError from admit (the API's parsers refuse such a body before admission)."""
    body = {**seed("03"), "spec": {**seed("03")["spec"], "x": 2**70}}
    with pytest.raises(ValidationFailed, match="spec: holds a value JSON cannot carry"):
        admit(body)
