"""The nine seed manifests through the real CLI and a real apiaryd: apply (both orders), get,
round-trip through ``-o yaml``, idempotent re-apply, diff and dry-run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from ctlkit import Ctl

KIND_PLURAL = {"Cell": "cells", "Secret": "secrets", "AgentSpec": "agentspecs", "Hive": "hives"}


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    assert isinstance(doc, dict)
    return doc


def assert_contains(actual: Any, expected: Any, where: str = "") -> None:
    """Every field of ``expected`` is in ``actual`` with the same value (extra fields allowed)."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: expected a mapping, got {actual!r}"
        for k, v in expected.items():
            assert k in actual, f"{where}.{k} missing from the server's object"
            assert_contains(actual[k], v, f"{where}.{k}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_contains(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def test_apply_seed_directory_then_get_round_trips_every_field(
    fresh_ctl: Ctl, seeds: list[Path]
) -> None:
    r = fresh_ctl("apply", "-f", str(seeds[0].parent))
    assert r.exit_code == 0, r
    lines = r.stdout.splitlines()
    # the default cell exists from first start, so applying it configures it
    assert lines[0] == "cell/default configured"
    assert lines[1:] == [
        "secret/api-key-secret created",
        "agentspec/echo-agent created",
        "agentspec/llm-agent created",
        "hive/pipeline-hive created",
        "hive/hierarchical-hive created",
        "hive/swarm-hive created",
        "hive/event-driven-hive created",
        "hive/composed-hive created",
    ]
    names = {line.split()[0] for line in lines}
    listed: set[str] = set()
    for kind in ("cells", "secrets", "agentspecs", "hives"):
        r = fresh_ctl("get", kind, "-o", "name")
        assert r.exit_code == 0, r
        listed |= set(r.stdout.split())
    assert names <= listed and len(names) == 9

    for path in seeds:
        seed = load(path)
        name = seed["metadata"]["name"]
        extra = ["--reveal"] if seed["kind"] == "Secret" else []
        r = fresh_ctl("get", KIND_PLURAL[seed["kind"]], name, "-o", "yaml", *extra)
        assert r.exit_code == 0, r
        assert_contains(yaml.safe_load(r.stdout), seed, f"{path.name}")
        r = fresh_ctl("get", seed["kind"], name, "-o", "json", *extra)
        assert_contains(yaml.safe_load(r.stdout), seed, f"{path.name} (json)")

    # what `get -o yaml` prints applies back unchanged: nothing is lost on the way
    dumped = fresh_ctl("get", "hives", "-o", "yaml").stdout
    r = fresh_ctl("apply", "-f", "-", input=dumped)
    assert r.exit_code == 0, r
    assert r.stdout.splitlines() == [
        f"hive/{n} unchanged"
        for n in sorted(
            [
                "pipeline-hive",
                "hierarchical-hive",
                "swarm-hive",
                "event-driven-hive",
                "composed-hive",
            ]
        )
    ]

    again = fresh_ctl("apply", "-f", str(seeds[0].parent))
    assert again.exit_code == 0 and again.stdout.count(" unchanged") == 9, again
    r = fresh_ctl("diff", "-f", str(seeds[0].parent))
    assert (r.exit_code, r.stdout) == (0, ""), r


def test_apply_seeds_one_by_one_in_reverse_order_resolves_references(
    fresh_ctl: Ctl, seeds: list[Path]
) -> None:
    for path in reversed(seeds):
        r = fresh_ctl("apply", "-f", str(path))
        assert r.exit_code == 0, r
        assert r.stdout.strip().endswith(("created", "configured")), r
    # hives were applied before their agentspecs: references dangle, then resolve
    for path in seeds[4:]:
        name = load(path)["metadata"]["name"]
        r = fresh_ctl("wait", f"hive/{name}", "--for=condition=ResolvedRefs", "--timeout", "20s")
        assert r.exit_code == 0, r
        assert r.stdout.strip() == f"hive/{name} condition ResolvedRefs=True met"
    r = fresh_ctl("get", "hives")
    assert r.exit_code == 0, r
    rows = r.stdout.splitlines()
    assert rows[0].split() == ["NAME", "PATTERN", "STAGES", "READY", "REFS", "AGE"]
    assert len(rows) == 6 and all(row.split()[4] == "True" for row in rows[1:]), r


def test_dry_run_validates_but_stores_nothing(fresh_ctl: Ctl, seeds: list[Path]) -> None:
    r = fresh_ctl("apply", "-f", str(seeds[0].parent), "--dry-run")
    assert r.exit_code == 0, r
    assert "hive/pipeline-hive created (dry run)" in r.stdout.splitlines()
    for kind in ("secrets", "agentspecs", "hives"):
        r = fresh_ctl("get", kind, "-o", "name")
        assert (r.exit_code, r.stdout) == (0, ""), r
        assert f"No {kind} found" in r.stderr
    r = fresh_ctl("diff", "-f", str(seeds[4]))
    assert r.exit_code == 1 and "+++ local/hive/pipeline-hive" in r.stdout, r
