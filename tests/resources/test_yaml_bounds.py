"""YAML alias bounds (issue 10.3): a billion-laughs document is refused before anything expands it,
wherever YAML is read — the bounded loader itself, the API's body parser and the CLI's manifests —
while ordinary anchors, aliases and merge keys keep working."""

from __future__ import annotations

import time

import pytest
import yaml

from apiary.api.bodies import parse_body
from apiary.ctl.manifests import parse_text
from apiary.errors import BadRequest
from apiary.resources.yaml_bounds import YamlBounds, YamlBoundsError, load, load_all, measure


def laughs(levels: int = 9, width: int = 9) -> str:
    """The classic: each level is ``width`` aliases of the one before (``width**levels`` leaves)."""
    row = ",".join(["x"] * width)
    lines = [f"a0: &a0 [{row}]"]
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    return "\n".join(lines) + "\n"


BOMB = laughs()


def test_the_bomb_is_small_and_refused_at_once() -> None:
    assert len(BOMB) < 400  # 9**9 = 387 million strings once expanded
    started = time.perf_counter()
    with pytest.raises(YamlBoundsError) as caught:
        load(BOMB)
    assert time.perf_counter() - started < 0.1
    assert "aliases expand this document to more than 3145728 bytes" in str(caught.value)
    assert caught.value.problem_mark is not None  # points at a line, like any YAML error


def test_a_far_bigger_bomb_costs_no_more() -> None:
    started = time.perf_counter()
    with pytest.raises(YamlBoundsError):
        load(laughs(levels=30, width=30))
    assert time.perf_counter() - started < 0.1


def test_alias_count_and_depth_and_recursion_are_bounded() -> None:
    many = "base: &b [1]\nrefs:\n" + "".join("- *b\n" for _ in range(1001))
    with pytest.raises(YamlBoundsError, match="more than 1000 aliases"):
        load(many)
    assert len(load(many, YamlBounds(max_aliases=2000))["refs"]) == 1001
    with pytest.raises(YamlBoundsError, match="alias refers to a node that contains it"):
        load("a: &a [1, *a]")
    with pytest.raises(YamlBoundsError, match="alias refers to a node that contains it"):
        load("a: &a {b: *a}")
    nested = "x: &x [[[[1]]]]\n" + "y: &y [*x, [*x]]\n"
    assert measure(yaml.compose(nested)).depth == 7
    with pytest.raises(YamlBoundsError, match="nested more than 3 levels deep"):
        load(nested, YamlBounds(max_depth=3))


def test_ordinary_anchors_aliases_and_merges_still_load() -> None:
    text = (
        "defaults: &d {replicas: 2, agentRef: echo}\n"
        "stages:\n"
        "  - <<: *d\n    name: one\n"
        "  - <<: *d\n    name: two\n    replicas: 3\n"
    )
    doc = load(text)
    assert doc["stages"] == [
        {"replicas": 2, "agentRef": "echo", "name": "one"},
        {"replicas": 3, "agentRef": "echo", "name": "two"},
    ]
    assert doc == yaml.safe_load(text)
    assert load_all("a: 1\n---\n---\nb: [1, 2]\n") == [{"a": 1}, None, {"b": [1, 2]}]
    assert load("") is None


def test_the_api_body_parser_refuses_the_bomb_with_a_400() -> None:
    started = time.perf_counter()
    with pytest.raises(BadRequest) as caught:
        parse_body(BOMB.encode(), "application/yaml")
    assert time.perf_counter() - started < 0.1
    assert caught.value.status == 400
    assert caught.value.message.startswith("YAML body refused: aliases expand")
    ok = parse_body(b"kind: Hive\nmetadata: &m {name: h}\nspec: {copy: *m}\n", "application/yaml")
    assert ok["spec"] == {"copy": {"name": "h"}}
    ok["spec"]["copy"]["name"] = "changed"  # aliases are copies once parsed, not shared objects
    assert ok["metadata"] == {"name": "h"}


def test_the_cli_reports_the_bomb_as_one_bad_document() -> None:
    text = "kind: Cell\nmetadata: {name: fine}\n---\n" + BOMB
    started = time.perf_counter()
    docs = parse_text(text, "bomb.yaml")
    assert time.perf_counter() - started < 0.1
    assert docs[0].obj == {"kind": "Cell", "metadata": {"name": "fine"}}
    assert docs[1].obj is None and docs[1].error is not None
    assert docs[1].error.startswith("invalid YAML at line")
    assert "aliases expand this document" in docs[1].error
